"""``headpuppet fine-tune``: few-shot fine-tuning of a meta-learned model on one new person
(Zakharov et al. 2019, section 3.4). Writes a person folder that ``headpuppet animate`` takes as SOURCE.

A thin wrapper over :func:`headpuppet.fine_tune`: parse the options, call, print."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from ..fewshot.api import fine_tune
from ._common import RichReporter, console, handle_errors


def register(app: typer.Typer, state) -> None:
    @app.command("fine-tune", rich_help_panel="Pipeline")
    @handle_errors
    def finetune(
        checkpoint: Path = typer.Argument(..., help="Run or checkpoint folder from `headpuppet meta-train`."),
        sources: List[str] = typer.Argument(..., metavar="SOURCE...",
                                            help="Photos, a folder of photos, or a video of the new person."),
        out: Path = typer.Option(..., "--out", "-o", help="Person folder to write."),
        steps: Optional[int] = typer.Option(None, "--steps", min=0, help="Steps \\[default: finetune.steps of the checkpoint's config]."),
        frames: int = typer.Option(32, "--frames", "-t", min=1, help="Frames sampled when SOURCE is a video (T)."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda \\[default: cuda if available]."),
        detector: Optional[str] = typer.Option(None, "--detector", help="Landmark detector plugin \\[default: the checkpoint's]."),
        seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed of the batch order and networks' randomness."),
    ) -> None:
        """Fine-tune a checkpoint on frames of one new person."""
        t0 = time.perf_counter()
        tuned = fine_tune(sources, out, checkpoint=checkpoint, steps=steps, frames=frames, device=device,
                          detector=detector, seed=seed, pm=state.pm, reporter=RichReporter())
        console.print(f"wrote {out}: {tuned.num_shots} frames, {tuned.finetune_steps} steps, "
                      f"{time.perf_counter() - t0:.1f} s; animate it with "
                      f"`headpuppet animate {out} DRIVER.mp4`", highlight=False, soft_wrap=True)
