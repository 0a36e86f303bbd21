"""``headpuppet preprocess``: videos -> face crops + 68 landmarks, in the dataset format.

Zakharov et al. 2019, Sec. 4 ("Datasets"): the meta-learning stage trains on VoxCeleb talking-head
videos whose frames are face crops with landmarks from an off-the-shelf detector (FAN in the paper;
here any ``landmarks`` plugin, MediaPipe by default). This module does that once, so training
reads JPEGs and ``.npy`` files instead of decoding video:

1. find the inputs (video files, folders of image frames, folders of those, recursively);
2. per video: decode (sampled by ``every`` / ``max_frames``), detect the largest face per frame,
   drop frames without a face, choose ONE crop box for the whole video
   (:func:`headpuppet.media.crop.face_crop_box`), crop and resize every kept frame to ``size``, express
   the landmarks in crop pixels and write them (:class:`headpuppet.data.format.PendingVideo`);
3. summarise: done, skipped (already complete), failed with a one-line reason, frames kept and
   frames dropped for want of a face.

Every per-video problem (missing path, not a video, unreadable, empty folder, no face at all)
becomes one line in the summary; the batch goes on. Completed videos are skipped on a re-run and
interrupted ones are redone, so a killed job is resumed by running the same command again.
``shard=(i, n)`` keeps every n-th input (from i, after sorting) so an array job splits the inputs
deterministically into disjoint parts that together cover everything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HeadpuppetError
from ..media.detection import close_detector
from ..plugins import make_plugin_manager, registry
from ..progress import NULL, Reporter
from .discover import Item, assign_ids, discover, shard_items
from .extract import ExtractConfig, VideoResult, process_video, run_one
from .format import is_done, write_dataset_json
from .preview import write_preview
from .workers import run_pool

__all__ = ["Item", "VideoResult", "Summary", "discover", "assign_ids", "shard_items", "preprocess",
           "process_video", "write_preview"]


@dataclass
class Summary:
    """The outcome of one preprocess run (this shard only)."""

    out: Path
    results: list[VideoResult] = field(default_factory=list)
    preview: Path | None = None
    seconds: float = 0.0

    def _of(self, status: str) -> list[VideoResult]:
        return [r for r in self.results if r.status == status]

    @property
    def done(self) -> list[VideoResult]:
        return self._of("done")

    @property
    def skipped(self) -> list[VideoResult]:
        return self._of("skipped")

    @property
    def failed(self) -> list[VideoResult]:
        return self._of("failed")

    @property
    def frames_kept(self) -> int:
        return sum(r.frames_kept for r in self.results)

    @property
    def frames_no_face(self) -> int:
        return sum(r.frames_no_face for r in self.results)

    @property
    def ok(self) -> bool:
        """Whether anything is usable: at least one video done or already complete."""
        return bool(self.done or self.skipped)


def preprocess(inputs: list[Path], out: Path, size: int = 256, every: int = 1, max_frames: int | None = None,
               detector: str = "mediapipe", workers: int = 1, shard: tuple[int, int] = (0, 1),
               preview: bool = False, pm=None, reporter: Reporter | None = None) -> Summary:
    """Preprocess videos into the dataset at ``out`` (see the module docstring).

    Args:
        inputs: video files, folders of image frames, folders of those (searched recursively).
        out: the dataset folder (created; an existing dataset is resumed, with the same size and
            detector).
        size: crop side in pixels.
        every: keep every ``every``-th frame of each video.
        max_frames: keep at most this many sampled frames per video (before dropping faceless ones).
        detector: name of a ``landmarks`` plugin.
        workers: with at least as many videos as workers, processes working on different videos
            at once (each loads its own detector); with fewer, threads in this process working on
            blocks of frames of the same video (:mod:`headpuppet.data.extract`).
        shard: ``(i, n)``: process only every ``n``-th input from ``i``.
        preview: write ``out/preview.png`` (crops, landmark images, overlays).
        pm: plugin manager (default: a fresh one).
        reporter: progress reporting (default: silent).

    Returns:
        The :class:`Summary`. Per-video problems are in it; only problems with the whole run
        (bad arguments, unknown detector, an ``out`` that is not a compatible dataset) raise.
    """
    reporter = reporter or NULL
    t_start = time.perf_counter()
    if size < 8:
        raise HeadpuppetError(f"size must be at least 8 pixels, got {size}")
    if every < 1:
        raise HeadpuppetError(f"every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise HeadpuppetError(f"max-frames must be at least 1, got {max_frames}")
    if workers < 1:
        raise HeadpuppetError(f"workers must be at least 1, got {workers}")
    if not inputs:
        raise HeadpuppetError("no INPUT given; pass video files or folders")
    out = Path(out)
    pm = pm if pm is not None else make_plugin_manager()

    det = registry(pm, "landmarks").create(detector)  # fails early, one line, on an unknown name
    has_iris = bool(getattr(det, "has_iris", False))
    write_dataset_json(out, size, detector, has_iris)

    items = shard_items(assign_ids(discover([Path(p) for p in inputs], exclude=out)), shard)
    cfg = ExtractConfig(out=out, size=int(size), every=int(every), max_frames=max_frames, detector=detector)
    summary = Summary(out=out)
    extra: list = []  # detectors of the threads beyond the first
    todo: list[Item] = []
    for it in items:
        if it.kind == "error":
            summary.results.append(VideoResult(str(it.source), it.id, "failed", reason=it.reason))
        elif is_done(out, it.id):
            summary.results.append(VideoResult(str(it.source), it.id, "skipped", reason="already done"))
        else:
            todo.append(it)
    if summary.skipped:
        reporter.info(f"{len(summary.skipped)} videos already done in {out}; skipping them")

    try:
        if todo:
            with reporter.task("preprocess", total=len(todo)) as task:
                def record(r: VideoResult) -> None:
                    summary.results.append(r)
                    if r.status == "failed":
                        reporter.warn(f"{r.source}: {r.reason}")
                    task.advance(1, frames=summary.frames_kept, failed=len(summary.failed))

                if len(todo) < workers or workers == 1:
                    # fewer videos than workers: threads share each video's frames (extract's blocks)
                    extra = [registry(pm, "landmarks").create(detector) for _ in range(workers - 1)]
                    for it in todo:
                        record(run_one(it, [det, *extra], cfg))
                else:
                    close_detector(det)  # each worker process loads its own
                    run_pool(todo, pm, detector, cfg, workers, record)
    finally:
        for d in [det, *extra]:
            close_detector(d)

    if preview:
        try:
            summary.preview = write_preview(out, prefer=[r.id for r in summary.done])
        except HeadpuppetError as exc:
            reporter.warn(f"no preview: {exc}")
    summary.seconds = time.perf_counter() - t_start
    return summary
