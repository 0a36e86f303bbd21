"""``evaluate()``: the whole evaluate stage as one call (what ``headpuppet evaluate`` runs).

Checkpoint + held-out preprocessed dataset + names of baselines and metrics in; the results and,
when ``out`` is given, the report on disk out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..devices import resolve_device, tune_allocator
from ..errors import HeadpuppetError, PluginError
from ..outputs import check_not_input, check_writable_dir
from ..plugins import DEFAULT_DETECTOR, make_plugin_manager, registry
from ..progress import NULL, Reporter
from .baselines import make_baseline
from .methods import ModelMethod
from .metric import Metric, MetricStatus, load_metrics
from .protocol import DEFAULT_SHOTS, EvalResults, EvalSettings, run_evaluation
from .report import write_report

DEFAULT_BASELINES = ("copy", "warp")


def evaluate(checkpoint: str | Path | None, data: str | Path, *, out: str | Path | None = None,
             shots: Sequence[int] = DEFAULT_SHOTS, modes: Sequence[str] | None = None,
             baselines: Sequence[str] = DEFAULT_BASELINES, metrics: Sequence[str] | None = None,
             max_videos: int | None = None, frames_per_video: int = 8, finetune_steps: int | None = None,
             seed: int = 0, device: str = "cpu", detector: str | None = None,
             weights_dir: str | Path | None = None, examples: int = 4, precision: str = "fp32",
             pm=None, reporter: Reporter | None = None) -> EvalResults:
    """Run the paper's self-reenactment protocol (Zakharov et al. 2019, section 4) on held-out videos.

    For each K in ``shots``, every method builds a person from K frames of each video and renders
    frames of that video it never saw, from their landmarks; every metric compares them with the
    real frames. Deterministic for a given ``seed``.

    Args:
        checkpoint: a run or checkpoint folder from ``meta-train``, or ``None`` for baselines only.
        data: a preprocessed dataset of held-out videos (``headpuppet preprocess``); resized to the
            model's crop size when it differs (said through ``reporter.info``).
        out: a folder for ``metrics.json``, ``report.md`` and the PNGs (nothing written when None);
            checked before any work, refused when it would write over an input.
        shots: the numbers of shots K (positive).
        modes: model modes, ``"ff"`` (feed-forward) and/or ``"ft"`` (fine-tuned); default both with
            a checkpoint, none without.
        baselines: training-free methods, from ``copy``, ``warp``, ``warp-pwa``; ``()`` for none.
        metrics: registered metric names; default every registered one, the paper's first.
        max_videos: evaluate at most this many videos (the first in id order).
        frames_per_video: target frames per video.
        finetune_steps: steps of ``ft``; default the checkpoint config's.
        seed: the seed of every random choice.
        device: ``cpu``, ``cuda``, ``cuda:1``...
        detector: the landmark detector of the landmark error; default the dataset's (then
            mediapipe); ``"none"`` skips that metric.
        weights_dir: where ``headpuppet weights`` put the FID / CSIM weights.
        examples: videos shown in the example PNGs.
        precision: how G runs: ``fp32`` (the protocol: the same table on every machine), ``bf16`` or
            ``auto``.
        pm: a plugin manager (default: a new one with every installed plugin).
        reporter: progress and messages (default: silent).

    Returns:
        :class:`~.protocol.EvalResults`: ``.metrics`` says which metrics ran (and why not, with the
        fixing command), ``.cells`` the table, ``.files`` the report files written.

    Raises:
        HeadpuppetError: a one-line message for bad input (no methods, missing dataset, a
            checkpoint of another version, an unknown device or metric...).
    """
    tune_allocator()
    reporter = reporter or NULL
    pm = pm if pm is not None else make_plugin_manager()
    device = str(resolve_device(device))  # an unknown or absent device: one line, before any work
    if out is not None:
        check_not_input(out, [("checkpoint", checkpoint), ("dataset", data), ("weights folder", weights_dir)], "--out")
        check_writable_dir(out, "--out")  # not after the evaluation
    modes = list(modes) if modes is not None else ([] if checkpoint is None else ["ff", "ft"])
    if checkpoint is None and modes:
        raise HeadpuppetError("--mode needs a checkpoint; pass a run or checkpoint folder as CHECKPOINT, "
                              "or drop --mode to evaluate baselines only")
    methods = [make_baseline(b) for b in baselines]
    if not methods and checkpoint is None:
        raise HeadpuppetError("nothing to evaluate: CHECKPOINT is none and --baseline none; give one of them")

    from ..data.format import open_dataset  # lazy: cv2 (CLI start-up: the metrics plugin imports this package)

    dataset = open_dataset(data)  # one-line DatasetError when missing or empty
    ckpt_info = None
    if checkpoint is not None:
        dataset, animator = _load_model(checkpoint, dataset, data, device, precision, pm, reporter)
        ckpt_info = {"path": str(checkpoint), "step": _step(animator)}
        methods += [ModelMethod(animator, m, finetune_steps, seed) for m in modes]

    metric_objs, status = load_metrics(pm, list(metrics) if metrics is not None else None, weights_dir, device)
    det = choose_detector(pm, metric_objs, status, detector or dataset.detector or DEFAULT_DETECTOR)
    settings = EvalSettings(shots=tuple(shots), frames_per_video=frames_per_video, max_videos=max_videos,
                            seed=seed, examples=examples)
    results = run_evaluation(
        dataset, methods, metric_objs, status, settings, detector=det, reporter=reporter,
        checkpoint_info=ckpt_info,
        dataset_info={"path": str(data), "videos": min(len(dataset.videos), max_videos or len(dataset.videos)),
                      "size": dataset.size, "detector": dataset.detector},
    )
    if out is not None:
        results.files = write_report(results, out)
    return results


def choose_detector(pm, metrics: dict[str, Metric], status: dict[str, MetricStatus], name: str):
    """The landmark detector ``name`` when a requested metric needs one (the landmark error), else
    None. ``"none"`` or a detector that cannot be created turns that metric into not computed, with
    the reason, in ``metrics`` / ``status``."""
    if "landmark-error" not in metrics:
        return None
    if name.lower() == "none":
        reason = "--detector none"
    else:
        try:
            return registry(pm, "landmarks").create(name)
        except (PluginError, ImportError) as exc:
            reason = f"detector '{name}' unavailable: {exc}"
    del metrics["landmark-error"]
    status["landmark-error"].computed = False
    status["landmark-error"].reason = reason
    return None


def _load_model(checkpoint, dataset, data, device: str, precision: str, pm, reporter: Reporter):
    """The animator of ``checkpoint`` and the dataset at its crop size."""
    from ..fewshot.animator import Animator  # lazy: torch, +1.4 s at CLI start-up (measured)

    animator = Animator.from_checkpoint(checkpoint, device=device, pm=pm, precision=precision)
    if animator.size != dataset.size:
        reporter.info(f"{data} has {dataset.size} px crops; resizing them to the model's {animator.size} px "
                      f"(frames and landmarks)")
        dataset = dataset.resized(animator.size)
    if animator.embedder is None:
        raise HeadpuppetError(f"{checkpoint} has no embedder; evaluate needs a meta-train checkpoint")
    return dataset, animator


def _step(animator) -> int | None:
    from ..training.checkpoint import resolve  # lazy: torch, +1.4 s at CLI start-up (measured)

    try:
        folder = resolve(animator.source)
        return int(json.loads((folder / "meta.json").read_text()).get("step"))
    except Exception:  # an informational field only
        return None
