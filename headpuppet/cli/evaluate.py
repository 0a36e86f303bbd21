"""``headpuppet evaluate``: the paper's self-reenactment metrics on held-out preprocessed videos.

Thin: parse the options, call :func:`headpuppet.evaluation.evaluate` (which writes the report) and
show its table (:func:`headpuppet.evaluation.report.table`) with Rich.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..evaluation import evaluate as run
from ..evaluation.report import notes, table
from ._common import RichReporter, console, handle_errors
from .animate import _check_precision


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
                                           help="Model modes: ff (feed-forward), ft (fine-tuned) \\[default: ff,ft]."),
        baseline: Optional[List[str]] = typer.Option(None, "--baseline", "-b",
                                                     help="Baselines: copy, warp (thin-plate spline), warp-pwa "
                                                          "(piecewise affine), or none \\[default: copy, warp]."),
        out: Path = typer.Option(Path("report"), "--out", "-o", help="Folder for metrics.json, report.md and PNGs."),
        metrics: Optional[str] = typer.Option(None, "--metrics", "-m",
                                              help="Metrics, comma-separated \\[default: every registered one]."),
        max_videos: Optional[int] = typer.Option(None, "--max-videos", min=1, help="Evaluate at most N videos."),
        frames_per_video: int = typer.Option(8, "--frames-per-video", min=1, help="Target frames per video."),
        finetune_steps: Optional[int] = typer.Option(None, "--finetune-steps", min=0,
                                                     help="Fine-tuning steps for ft \\[default: the checkpoint's config]."),
        seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of every random choice (same seed, same table)."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
        detector: Optional[str] = typer.Option(None, "--detector",
                                               help="Landmark detector for the landmark error \\[default: the "
                                                    "dataset's]; 'none' to skip that metric."),
        weights_dir: Optional[Path] = typer.Option(None, "--weights-dir",
                                                   help="Where `headpuppet weights` put FID/CSIM weights."),
        examples: int = typer.Option(4, "--examples", min=0, help="Videos shown in the example PNGs."),
        precision: str = typer.Option("fp32", "--precision",
                                      help="How G runs: fp32 (the protocol: the same table on every machine), "
                                           "bf16 or auto."),
    ) -> None:
        """Reproduce the paper's self-reenactment table (FID, SSIM, CSIM, landmark error) with baselines."""
        precision = _check_precision(precision)
        ks = _ints(shots, "--shots")
        modes = _names([mode]) if mode else None
        for m in modes or []:
            if m not in ("ff", "ft"):
                raise typer.BadParameter(f"--mode takes ff and/or ft, got {m!r}")
        base_names = _names(baseline) if baseline else ["copy", "warp"]
        no_model = checkpoint.strip().lower() in ("none", "-", "")
        results = run(
            None if no_model else checkpoint, data, out=out, shots=ks, modes=modes,
            baselines=[] if "none" in base_names else base_names,
            metrics=_names([metrics]) if metrics else None, max_videos=max_videos,
            frames_per_video=frames_per_video, finetune_steps=finetune_steps, seed=seed, device=device,
            detector=detector, weights_dir=weights_dir, examples=examples, precision=precision,
            pm=state.pm, reporter=_Reporter(),
        )
        files = results.files

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


class _Reporter(RichReporter):
    """Progress bars on stderr as every command's; evaluate's notes (a dataset resized to the
    model) on stdout beside its table."""

    def info(self, message: str) -> None:
        console.print(escape(message), highlight=False, soft_wrap=True)
