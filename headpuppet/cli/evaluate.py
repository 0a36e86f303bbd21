"""``headpuppet evaluate``: the paper's self-reenactment metrics on held-out preprocessed videos.

Thin: parse, load the dataset / checkpoint / metrics / detector, call
:func:`headpuppet.evaluation.run_evaluation`, write the report (:mod:`headpuppet.report`) and show
its table with Rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ._common import RichReporter, console, handle_errors


def _ints(text: str, flag: str) -> list[int]:
    try:
        vals = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise typer.BadParameter(f"{flag} takes comma-separated integers like 1,8,32, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise typer.BadParameter(f"{flag} takes positive integers like 1,8,32, got {text!r}")
    return sorted(dict.fromkeys(vals))


def _names(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [t.strip() for t in v.split(",") if t.strip()]
    return list(dict.fromkeys(out))


def register(app: typer.Typer, state) -> None:
    @app.command("evaluate", rich_help_panel="Pipeline")
    @handle_errors
    def evaluate(
        checkpoint: str = typer.Argument(..., metavar="CHECKPOINT",
                                         help="Run or checkpoint folder from meta-train, or 'none' for baselines only."),
        data: Path = typer.Argument(..., metavar="DATA", help="Preprocessed dataset of held-out videos."),
        shots: str = typer.Option("1,8,32", "--shots", "-k", help="Numbers of shots K, comma-separated."),
        mode: Optional[str] = typer.Option(None, "--mode",
                                           help="Model modes: ff (feed-forward), ft (fine-tuned) [default: ff,ft]."),
        baseline: Optional[List[str]] = typer.Option(None, "--baseline", "-b",
                                                     help="Baselines: copy, warp (thin-plate spline), warp-pwa "
                                                          "(piecewise affine), or none [default: copy, warp]."),
        out: Path = typer.Option(Path("report"), "--out", "-o", help="Folder for metrics.json, report.md and PNGs."),
        metrics: Optional[str] = typer.Option(None, "--metrics", "-m",
                                              help="Metrics, comma-separated [default: every registered one]."),
        max_videos: Optional[int] = typer.Option(None, "--max-videos", min=1, help="Evaluate at most N videos."),
        frames_per_video: int = typer.Option(8, "--frames-per-video", min=1, help="Target frames per video."),
        finetune_steps: Optional[int] = typer.Option(None, "--finetune-steps", min=0,
                                                     help="Fine-tuning steps for ft [default: the checkpoint's config]."),
        seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of every random choice (same seed, same table)."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
        detector: Optional[str] = typer.Option(None, "--detector",
                                               help="Landmark detector for the landmark error [default: the "
                                                    "dataset's]; 'none' to skip that metric."),
        weights_dir: Optional[Path] = typer.Option(None, "--weights-dir",
                                                   help="Where `headpuppet weights` put FID/CSIM weights."),
        examples: int = typer.Option(4, "--examples", min=0, help="Videos shown in the example PNGs."),
        precision: str = typer.Option("fp32", "--precision",
                                      help="How G runs: fp32 (the protocol: the same table on every machine), "
                                           "bf16 or auto."),
    ) -> None:
        """Reproduce the paper's self-reenactment table (FID, SSIM, CSIM, landmark error) with baselines."""
        from ..baselines import make_baseline
        from .animate import _check_precision

        precision = _check_precision(precision)
        from ..data.format import open_dataset
        from ..errors import HeadpuppetError, PluginError
        from ..evaluation import EvalSettings, ModelMethod, load_metrics, run_evaluation
        from ..plugins import registry
        from ..report import notes, table, write_report

        from ..devices import resolve_device
        from ..outputs import check_not_input, check_writable_dir

        ks = _ints(shots, "--shots")
        no_model = checkpoint.strip().lower() in ("none", "-", "")
        device = str(resolve_device(device))  # an unknown or absent device: one line, before any work
        check_not_input(out, [("checkpoint", None if no_model else checkpoint), ("dataset", data),
                              ("weights folder", weights_dir)], "--out")
        check_writable_dir(out, "--out")      # not after the evaluation
        modes = _names([mode]) if mode else ([] if no_model else ["ff", "ft"])
        for m in modes:
            if m not in ("ff", "ft"):
                raise typer.BadParameter(f"--mode takes ff and/or ft, got {m!r}")
        if no_model and modes:
            raise HeadpuppetError("--mode needs a checkpoint; pass a run or checkpoint folder as CHECKPOINT, "
                                  "or drop --mode to evaluate baselines only")
        base_names = _names(baseline) if baseline else ["copy", "warp"]
        if "none" in base_names:
            base_names = []
        methods = [make_baseline(b) for b in base_names]
        if not methods and no_model:
            raise HeadpuppetError("nothing to evaluate: CHECKPOINT is none and --baseline none; give one of them")

        dataset = open_dataset(data)  # one-line DatasetError when missing or empty
        ckpt_info = None
        if not no_model:
            from ..fewshot.animator import Animator

            animator = Animator.from_checkpoint(checkpoint, device=device, pm=state.pm,
                                                precision=precision)
            if animator.size != dataset.size:
                console.print(f"{data} has {dataset.size} px crops; resizing them to the model's {animator.size} px "
                              f"(frames and landmarks)", highlight=False, soft_wrap=True)
                dataset = dataset.resized(animator.size)
            if animator.embedder is None:
                raise HeadpuppetError(f"{checkpoint} has no embedder; evaluate needs a meta-train checkpoint")
            ckpt_info = {"path": str(checkpoint), "step": _step(animator)}
            methods += [ModelMethod(animator, m, finetune_steps, seed) for m in modes]

        metric_objs, status = load_metrics(state.pm, _names([metrics]) if metrics else None, weights_dir, device)
        det = None
        if "landmark-error" in metric_objs:
            det_name = detector or dataset.detector or "mediapipe"
            if det_name.lower() == "none":
                del metric_objs["landmark-error"]
                status["landmark-error"].computed = False
                status["landmark-error"].reason = "--detector none"
            else:
                try:
                    det = registry(state.pm, "landmarks").create(det_name)
                except (PluginError, ImportError) as exc:
                    del metric_objs["landmark-error"]
                    status["landmark-error"].computed = False
                    status["landmark-error"].reason = f"detector '{det_name}' unavailable: {exc}"

        settings = EvalSettings(shots=tuple(ks), frames_per_video=frames_per_video, max_videos=max_videos,
                                seed=seed, examples=examples)
        reporter = RichReporter()
        results = run_evaluation(
            dataset, methods, metric_objs, status, settings, detector=det, reporter=reporter,
            checkpoint_info=ckpt_info,
            dataset_info={"path": str(data), "videos": min(len(dataset.videos), max_videos or len(dataset.videos)),
                          "size": dataset.size, "detector": dataset.detector},
        )
        files = write_report(results, out)

        from rich.table import Table

        headers, rows = table(results)
        t = Table(title="Self-reenactment (T = shots)", title_justify="left")
        for i, h in enumerate(headers):
            t.add_column(h, justify="left" if i == 0 else "right")
        prev_k = None
        for cell, row in zip(sorted(results.cells, key=lambda c: (c.shots, results.methods.index(c.method))), rows):
            if prev_k is not None and cell.shots != prev_k:
                t.add_section()
            prev_k = cell.shots
            t.add_row(*row)
        console.print(t)
        for line in notes(results):
            console.print(line, highlight=False, soft_wrap=True)
        console.print(f"wrote {', '.join(sorted(files))} to {out}", highlight=False, soft_wrap=True)


def _step(animator) -> int | None:
    import json

    from ..training.checkpoint import resolve

    try:
        folder = resolve(animator.source)
        return int(json.loads((folder / "meta.json").read_text()).get("step"))
    except Exception:  # an informational field only
        return None
