"""``headpuppet animate``: make the SOURCE person move and talk like the DRIVER (paper section 4,
"puppeteering"; few-shot fine-tuning of section 3.4 with ``--finetune-steps``).

A thin wrapper over :func:`headpuppet.animate` (a file or folder DRIVER) and the live run of
``headpuppet live`` (a camera or stream DRIVER): parse the options, call, print."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..devices import PRECISIONS
from ..errors import MediaError
from ..fewshot.api import animate as run_animate
from ..media.streams import is_stream
from ._common import RichReporter, console, handle_errors
from .live import run_live_command


def _check_precision(precision: str) -> str:
    if precision.lower() not in PRECISIONS:
        raise typer.BadParameter(f"must be one of {', '.join(PRECISIONS)}, got {precision!r}",
                                 param_hint="'--precision'")
    return precision.lower()


def register(app: typer.Typer, state) -> None:
    @app.command("animate", rich_help_panel="Pipeline")
    @handle_errors
    def animate(
        paths: List[str] = typer.Argument(..., metavar="SOURCE... DRIVER",
                                          help="SOURCE: a photo, several photos, a folder of photos, a video "
                                               "(K frames sampled) or a fine-tuned person folder; then the "
                                               "DRIVER video (or folder of frames; or a camera, '-' for stdin, "
                                               "a pipe or a stream URL, animated live as in `headpuppet live`)."),
        output: Optional[Path] = typer.Option(None, "-o", "--output",
                                              help="Output video \\[default: <source>_<driver>.mp4]."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                                  help="Run or checkpoint folder \\[default: weights/demo]."),
        finetune_steps: Optional[int] = typer.Option(
            None, "--finetune-steps", min=0, show_default=False,
            help="Fine-tune G and D on the source shots first (paper 3.4); 0 skips it "
                 "\\[default: the model's finetune.steps, 40 for the default model; none for a person folder]."),
        relative: bool = typer.Option(True, "--relative/--absolute",
                                      help="Transfer the driver's motion onto the source's own landmarks "
                                           "(keeps its face shape), or drive with the driver's landmarks as they are."),
        smooth: float = typer.Option(1.0, "--smooth", min=0.0, max=1000.0,
                                     help="Temporal smoothing of the driver's landmarks (Gaussian sigma, frames)."),
        no_smooth: bool = typer.Option(False, "--no-smooth", help="Do not smooth the driver's landmarks."),
        side_by_side: bool = typer.Option(False, "--side-by-side", help="Write driver crop | result."),
        paste: bool = typer.Option(False, "--paste-back", help="Put the result back into the full source photo."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda \\[default: cuda if available]."),
        batch_size: int = typer.Option(8, "--batch-size", min=1, help="Frames per generator pass."),
        precision: str = typer.Option("auto", "--precision",
                                      help="How G runs: auto (bf16 where the device computes it natively, "
                                           "else fp32), fp32 or bf16."),
        compile_g: bool = typer.Option(False, "--compile",
                                       help="Compile G with torch.compile first (needs a C++ compiler; "
                                            "tens of seconds once, then faster frames): pays on long "
                                            "drivers and large models."),
        detector: Optional[str] = typer.Option(None, "--detector",
                                               help="Landmark detector plugin \\[default: the checkpoint's]."),
        shots: int = typer.Option(8, "--shots", "-k", min=1, help="Frames sampled when SOURCE is a video."),
        fps: float = typer.Option(25.0, "--fps", min=1.0, max=1000.0, help="Frame rate when DRIVER is a folder of frames."),
    ) -> None:
        """Animate a photo (or shots, or a fine-tuned person) with a driver video; keeps its audio."""
        precision = _check_precision(precision)
        if len(paths) < 2:
            raise MediaError("give at least one SOURCE and one DRIVER: headpuppet animate photo.jpg driver.mp4")
        *sources, driver_path = paths
        if is_stream(driver_path):   # a camera, stdin, a pipe or a URL: frame by frame as it arrives
            return run_live_command(state, sources, driver_path, output=None if output is None else str(output),
                                    checkpoint=checkpoint, finetune_steps=finetune_steps, relative=relative,
                                    smooth=0.0 if no_smooth else smooth, side_by_side=side_by_side, paste=paste,
                                    device=device, detector=detector, shots=shots, precision=precision,
                                    compile_g=compile_g)
        t0 = time.perf_counter()
        result = run_animate(sources, driver_path, output, checkpoint=checkpoint, finetune_steps=finetune_steps,
                             relative=relative, smooth=0.0 if no_smooth else smooth, side_by_side=side_by_side,
                             paste=paste, device=device, batch_size=batch_size, precision=precision,
                             detector=detector, shots=shots, fps=fps, compile=compile_g, pm=state.pm,
                             reporter=RichReporter())
        seconds = time.perf_counter() - t0
        lines = [f"wrote {result.output}: {result.frames} frames at {result.fps:g} fps"
                 + (" with the driver's audio" if result.has_audio else "")]
        if result.bridged:
            lines.append(f"{result.bridged} driver frame(s) had no face and were bridged from their neighbours")
        for label, n in result.several_faces:
            lines.append(f"{n} faces in the source {label}; the largest was used")
        if relative and result.reference is not None:
            lines.append(f"relative motion: driver frame {result.reference} mapped onto the source's pose")
        lines.append(f"{seconds:.1f} s in all, {result.frames / max(result.seconds, 1e-9):.1f} frames/s "
                     f"(landmarks + render + encode) on {result.device}")
        if logging.getLogger().isEnabledFor(logging.INFO):  # -v: where the time went
            lines.append("timings (s): " + " ".join(f"{k}={v:.2f}" for k, v in result.timings.items()))
        for line in lines:
            console.print(line, highlight=False, soft_wrap=True)
