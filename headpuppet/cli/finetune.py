"""``headpuppet fine-tune``: few-shot fine-tuning of a meta-learned model on one new person
(Zakharov et al. 2019, section 3.4). Writes a person folder that ``headpuppet animate`` takes as SOURCE."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

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
        import time

        from ..errors import CheckpointError, MediaError
        from ..fewshot.finetune import fine_tune_person
        from ..fewshot.animator import Animator
        from ..outputs import check_not_input, check_writable_dir
        from ..fewshot.person import is_person_dir
        from ..fewshot.sources import load_source_images
        from ..training.checkpoint import resolve
        from .animate import _default_device

        if out.exists() and not out.is_dir():
            raise MediaError(f"{out} is a file; --out must be a folder to write the person into")
        if not checkpoint.exists():
            raise CheckpointError(f"no checkpoint at {checkpoint}; pass a run or checkpoint folder")
        inputs = [("checkpoint", checkpoint)] + [("source", s) for s in sources]
        try:
            inputs.append(("checkpoint", resolve(checkpoint)))  # the step folder a run folder names
        except CheckpointError:
            pass  # not a checkpoint: loading it below says so
        check_not_input(out, inputs, "--out")
        if out.is_dir() and any(out.iterdir()) and not is_person_dir(out):
            raise MediaError(f"--out {out} is a folder that holds other files and is not a person folder; "
                             "give a new folder (or an earlier person folder to replace)")
        check_writable_dir(out, "--out")
        device = _default_device(device)
        reporter = RichReporter()
        t0 = time.perf_counter()
        src = load_source_images(sources, k=frames)
        animator = Animator.from_checkpoint(checkpoint, device=device, pm=state.pm)
        det = animator.make_detector(detector)
        person = animator.prepare_source(src.images, detector=det, labels=src.labels, reporter=reporter)
        tuned = fine_tune_person(animator, person, steps, reporter=reporter, preview_dir=out / "previews", seed=seed)
        animator.save_person(tuned, out)
        console.print(f"wrote {out}: {tuned.num_shots} frames, {tuned.finetune_steps} steps, "
                      f"{time.perf_counter() - t0:.1f} s; animate it with "
                      f"`headpuppet animate {out} DRIVER.mp4`", highlight=False, soft_wrap=True)
