"""The self-reenactment protocol and its runner.

Follows Zakharov et al. 2019, section 4 ("Datasets", "Metrics", "Methods"): for every held-out
video, a talking-head model is built from K frames ("shots") of one part of the video, feed-forward
(FF: the embedder's average, no training) or fine-tuned (FT: the few-shot fine-tuning of section
3.4), and then asked to reproduce frames of another part of the same video that it never saw, from
their landmarks alone. Every :class:`Method` (a baseline or the model in one mode) gives one row
per K; every metric (:mod:`.metric`, the metrics themselves are plugins) one column.

The run is deterministic for a given seed: shots and targets of a video are drawn from a generator
seeded by ``(seed, crc32(video id), K)``, independent of the order and number of videos.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Protocol, runtime_checkable

import numpy as np

from ..errors import HeadpuppetError
from ..progress import NULL, Reporter
from .metric import Metric, MetricBatch, MetricStatus

DEFAULT_SHOTS = (1, 8, 32)
EVAL_FORMAT = "headpuppet-evaluation"
EVAL_VERSION = 1


@runtime_checkable
class Method(Protocol):
    """A row family of the table: a baseline or a model in one mode.

    ``prepare(shots (K, S, S, 3) uint8, points (K, 68, 2), iris (K, 2, 3) | None, video_id) -> state``
    once per video (fine-tuning happens here); ``render(state, points (B, 68, 2), iris) ->
    (B, S, S, 3) uint8`` for batches of target poses, in the same crop as the shots.
    """

    name: str

    def prepare(self, shots: np.ndarray, points: np.ndarray, iris=None, video_id: str = "") -> Any: ...

    def render(self, state: Any, points: np.ndarray, iris=None) -> np.ndarray: ...


@dataclass
class EvalSettings:
    """What ``headpuppet evaluate`` runs (see the module docstring for the protocol).

    Attributes:
        shots: the K values.
        frames_per_video: target frames drawn per video (from the part the shots never come from).
        max_videos: evaluate at most this many videos (the first ones in id order).
        seed: the seed of every random choice (shots, targets, fine-tuning).
        batch_size: target frames rendered and scored at once.
        examples: videos shown in the PNG grids.
    """

    shots: tuple[int, ...] = DEFAULT_SHOTS
    frames_per_video: int = 8
    max_videos: int | None = None
    seed: int = 0
    batch_size: int = 8
    examples: int = 4


def video_seed(seed: int, video_id: str, k: int) -> int:
    """The seed of a random choice made for one video at one K (fine-tuning's), order-independent."""
    return (seed * 1_000_003 + zlib.crc32(video_id.encode()) * 131 + k) % (2 ** 31)


def plan_video(video_id: str, num_frames: int, k: int, frames_per_video: int, seed: int):
    """Shot and target frame indices for one video, or ``None`` when it has fewer than K + 1 frames.

    Targets come from the second half of the video (the same ones for every K where the video is
    long enough, so rows of different K compare like with like); shots from the part before the
    first target, so the model never sees a target frame.
    """
    if num_frames < k + 1:
        return None
    rng_t = np.random.default_rng([seed, zlib.crc32(video_id.encode())])
    half = num_frames // 2
    pool = np.arange(half, num_frames)
    targets = np.sort(rng_t.choice(pool, min(frames_per_video, len(pool)), replace=False))
    split = max(half, k)  # shots need k distinct frames before the split
    targets = targets[targets >= split]
    if len(targets) == 0:
        rest = np.arange(split, num_frames)
        targets = np.sort(rng_t.choice(rest, min(frames_per_video, len(rest)), replace=False))
    rng_s = np.random.default_rng([seed, zlib.crc32(video_id.encode()), k])
    shots = np.sort(rng_s.choice(split, k, replace=False))
    return shots.astype(int), targets.astype(int)


@dataclass
class CellResult:
    """One row of the table: a method at one K."""

    method: str
    shots: int
    videos: int
    frames: int
    metrics: dict[str, dict] = field(default_factory=dict)  # name -> asdict(MetricValue)

    @property
    def row(self) -> str:
        return f"{self.method} ({self.shots})"


@dataclass
class Skip:
    video: str
    shots: int
    reason: str


@dataclass
class Example:
    """One row of a PNG grid: sources, the driver (real target) frame, and each method's result."""

    video: str
    shots: int
    sources: list  # (S, S, 3) uint8 frames (up to 4)
    driver: np.ndarray
    driver_points: np.ndarray
    outputs: dict = field(default_factory=dict)  # method -> (S, S, 3) uint8


@dataclass
class EvalResults:
    """Everything a run produced; ``files`` are the report files written (name -> path), if any."""

    settings: dict
    dataset: dict
    checkpoint: dict | None
    methods: list[str]
    metrics: dict[str, MetricStatus]
    cells: list[CellResult] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def skipped_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.skipped:
            counts[str(s.shots)] = counts.get(str(s.shots), 0) + 1
        return counts

    def to_json(self) -> dict:
        """Everything but the example images; no timings or paths that change between runs, so the
        same inputs and seed give byte-identical files. (A metric's decimals are presentation, left
        out.)"""
        return {
            "format": EVAL_FORMAT,
            "version": EVAL_VERSION,
            "settings": self.settings,
            "dataset": self.dataset,
            "checkpoint": self.checkpoint,
            "methods": self.methods,
            "metrics": {n: {k: v for k, v in asdict(s).items() if k != "decimals"} for n, s in self.metrics.items()},
            "results": [asdict(c) for c in self.cells],
            "skipped": [asdict(s) for s in self.skipped],
            "skipped_count": self.skipped_counts(),
        }


def run_evaluation(dataset, methods: list, metrics: dict[str, Metric], status: dict[str, MetricStatus],
                   settings: EvalSettings, detector=None, reporter: Reporter | None = None,
                   checkpoint_info: dict | None = None, dataset_info: dict | None = None) -> EvalResults:
    """Run the self-reenactment protocol.

    Args:
        dataset: a :class:`headpuppet.data.format.DatasetIndex` (``.videos`` of records with
            ``.id``, ``.num_frames``, ``.landmarks``, ``.iris``, ``.frame(i)``).
        methods: :class:`Method` objects (baselines, model modes); each gives one row per K.
        metrics / status: from :func:`.metric.load_metrics`; a metric that raises a project error
            on a batch (e.g. the landmark error with no detector) is turned into not computed, with
            the reason, and its values are dropped from every cell.
        detector: the landmark detector passed to metrics in :class:`MetricBatch`.
    """
    reporter = reporter or NULL
    videos = _videos(dataset, settings)
    results = EvalResults(
        settings=asdict(settings) | {"shots": list(settings.shots)},
        dataset=dataset_info or {"videos": len(videos)},
        checkpoint=checkpoint_info,
        methods=[m.name for m in methods],
        metrics=status,
    )
    for k in settings.shots:
        plans = _plan(videos, k, settings, results, reporter)
        usable = [v for v in videos if v.id in plans]
        examples: dict[str, Example | None] = {v.id: None for v in usable[: settings.examples]}
        for method in methods:
            cell = _run_cell(method, k, usable, plans, metrics, status, settings, detector, examples, reporter)
            results.cells.append(cell)
        results.examples.extend(e for e in examples.values() if e is not None)
    # a metric that failed in a later cell is not computed anywhere: drop its partial values
    for cell in results.cells:
        for name in [n for n in cell.metrics if not status[n].computed]:
            del cell.metrics[name]
    return results


def _videos(dataset, settings: EvalSettings) -> list:
    videos = sorted(dataset.videos, key=lambda v: v.id)
    if not videos:
        raise HeadpuppetError("the dataset has no videos; preprocess some with `headpuppet preprocess VIDEOS OUT`")
    if settings.max_videos is not None:
        videos = videos[: settings.max_videos]
    if any(k < 1 for k in settings.shots):
        raise HeadpuppetError(f"--shots must be positive integers, got {list(settings.shots)}")
    return videos


def _plan(videos: list, k: int, settings: EvalSettings, results: EvalResults, reporter: Reporter) -> dict:
    """``video id -> (shot indices, target indices)`` at K = ``k``; a video too short is recorded
    in ``results.skipped`` and said."""
    plans = {}
    for v in videos:
        plan = plan_video(v.id, v.num_frames, k, settings.frames_per_video, settings.seed)
        if plan is not None:
            plans[v.id] = plan
            continue
        skip = Skip(v.id, k, f"{v.num_frames} frames, fewer than K + 1 = {k + 1}")
        results.skipped.append(skip)
        reporter.warn(f"video {v.id}: {skip.reason}; skipped for K={k}")
    return plans


def _run_cell(method, k: int, videos: list, plans: dict, metrics: dict[str, Metric],
              status: dict[str, MetricStatus], settings: EvalSettings, detector, examples: dict,
              reporter: Reporter) -> CellResult:
    """One row: ``method`` at K = ``k`` over every video; fills the example grids' column of it."""
    for m in metrics.values():
        m.reset()
    failed: dict[str, str] = {}  # metric name -> the error that stopped it in this cell
    frames = 0
    with reporter.task(f"{method.name} K={k}", total=len(videos)) as task:
        for v in videos:
            batches = _video_batches(method, v, *plans[v.id], settings.batch_size, detector)
            for i, (shots, batch) in enumerate(batches):
                _update(metrics, batch, failed)
                frames += len(batch.fake)
                if i == 0 and v.id in examples:
                    examples[v.id] = _example(examples[v.id], v.id, k, shots, batch, method.name)
            task.advance(1)
    cell = CellResult(method.name, k, len(videos), frames)
    for name, m in metrics.items():
        if name in failed:
            status[name] = replace(status[name], computed=False, reason=failed[name])
        else:
            cell.metrics[name] = asdict(m.compute())
    return cell


def _video_batches(method, video, shot_idx: np.ndarray, target_idx: np.ndarray, batch_size: int,
                   detector) -> Iterator[tuple[np.ndarray, MetricBatch]]:
    """Prepare ``method`` on the video's shots, then render its targets batch by batch:
    ``(shots (K, S, S, 3), batch)``."""
    shots = np.stack([video.frame(int(i)) for i in shot_idx])  # (K, S, S, 3)
    points = np.asarray(video.landmarks, np.float32)  # (N, 68, 2)
    iris = None if video.iris is None else np.asarray(video.iris, np.float32)  # (N, 2, 3)
    state = method.prepare(shots, points[shot_idx], None if iris is None else iris[shot_idx], video.id)
    for b0 in range(0, len(target_idx), batch_size):
        tidx = target_idx[b0:b0 + batch_size]
        real = np.stack([video.frame(int(i)) for i in tidx])  # (B, S, S, 3)
        fake = method.render(state, points[tidx], None if iris is None else iris[tidx])
        yield shots, MetricBatch(
            fake=np.asarray(fake, np.uint8), real=real, real_points=points[tidx],
            source=np.repeat(shots[:1], len(tidx), 0), source_points=np.repeat(points[shot_idx[:1]], len(tidx), 0),
            detector=detector, real_keys=[(video.id, int(i)) for i in tidx],
            source_keys=[(video.id, int(shot_idx[0]))] * len(tidx),
        )


def _update(metrics: dict[str, Metric], batch: MetricBatch, failed: dict[str, str]) -> None:
    for name, m in metrics.items():
        if name in failed:
            continue
        try:
            m.update(batch)
        except HeadpuppetError as exc:
            failed[name] = str(exc)


def _example(example: Example | None, video_id: str, k: int, shots: np.ndarray, batch: MetricBatch,
             method: str) -> Example:
    """The video's grid row with ``method``'s first frame added (sources: up to 4 of the K shots)."""
    example = example or Example(video_id, k, list(shots[:4]), batch.real[0], batch.real_points[0])
    example.outputs[method] = batch.fake[0]
    return example
