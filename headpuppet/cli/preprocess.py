"""``headpuppet preprocess``: crop faces, find landmarks and write a training dataset.

Thin: parse and check the options, call :func:`headpuppet.data.preprocess.preprocess`, print a summary.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..outputs import check_not_input, check_writable_dir
from ._common import RichReporter, console, fail, handle_errors


def parse_shard(value: str | None) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; ``typer.BadParameter`` otherwise."""
    if value is None:
        return (0, 1)
    parts = value.split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        i, n = int(parts[0]), int(parts[1])
    except ValueError:
        raise typer.BadParameter(f"'{value}' is not I/N (e.g. 0/4 for the first of four shards)") from None
    if n < 1 or not 0 <= i < n:
        raise typer.BadParameter(f"'{value}': need 0 <= I < N (shards are numbered from 0)")
    return (i, n)


def _check_size(value: int) -> int:
    if value < 8:
        raise typer.BadParameter(f"{value} is too small; give the crop side in pixels, e.g. 256")
    return value


def _check_positive(value: int | None) -> int | None:
    if value is not None and value < 1:
        raise typer.BadParameter(f"{value}: must be at least 1")
    return value


def register(app: typer.Typer, state) -> None:
    @app.command("preprocess", rich_help_panel="Pipeline")
    @handle_errors
    def preprocess(
        inputs: list[Path] = typer.Argument(..., metavar="INPUT", show_default=False,
                                            help="Video files, folders of image frames (one folder = one video), "
                                                 "or folders of those (searched recursively; VoxCeleb2's "
                                                 "id/youtube_id/clip.mp4 layout gives one person per id)."),
        out: Path = typer.Option(..., "--out", "-o", help="Dataset folder to write (re-running resumes it)."),
        size: int = typer.Option(256, "--size", callback=_check_size, help="Crop side in pixels."),
        every: int = typer.Option(1, "--every", callback=_check_positive, help="Keep every N-th frame."),
        max_frames: int = typer.Option(None, "--max-frames", callback=_check_positive,
                                       help="Keep at most M sampled frames per video."),
        detector: str = typer.Option("mediapipe", "--detector",
                                     help="Landmark detector plugin (see `headpuppet plugins`)."),
        workers: int = typer.Option(1, "--workers", "-j", callback=_check_positive,
                                    help="Parallel workers: one process per video, or threads sharing the frames of fewer videos."),
        shard: str = typer.Option(None, "--shard", metavar="I/N", callback=parse_shard,
                                  help="Process only every N-th input from the I-th (0-based), for array jobs."),
        preview: bool = typer.Option(False, "--preview", help="Also write OUT/preview.png to check crops and landmarks."),
    ) -> None:
        """Crop faces, find landmarks and write a training dataset.

        Videos already complete in OUT are skipped and interrupted ones redone, so re-running the same command resumes it. Exits non-zero when nothing could be processed.
        """
        from ..data.preprocess import preprocess as run  # lazy: cv2, +0.16 s at CLI start-up (measured)

        # the dataset may live inside an input folder (it is skipped when searching), never over one
        check_not_input(out, [("input", p) for p in inputs], "--out", inside=False)
        check_writable_dir(out, "--out")
        summary = run(list(inputs), out, size=size, every=every, max_frames=max_frames, detector=detector,
                      workers=workers, shard=shard or (0, 1), preview=preview, pm=state.pm, reporter=RichReporter())
        _print_summary(summary)
        if not summary.ok:
            raise fail(f"nothing could be processed into {out} ({len(summary.failed)} inputs failed; "
                       f"see the reasons above)")


def _print_summary(summary) -> None:
    table = Table(title=f"preprocess -> {summary.out}", title_justify="left", show_edge=False)
    table.add_column("", style="bold")
    table.add_column("count", justify="right")
    table.add_row("videos done", str(len(summary.done)))
    table.add_row("skipped (already done)", str(len(summary.skipped)))
    table.add_row("failed", str(len(summary.failed)), style="red" if summary.failed else None)
    table.add_row("frames kept", str(summary.frames_kept))
    table.add_row("frames dropped (no face)", str(summary.frames_no_face))
    console.print(table)
    if summary.failed:
        failed = Table(title="failed", title_justify="left", show_edge=False)
        failed.add_column("input", overflow="fold")
        failed.add_column("reason", overflow="fold")
        for r in summary.failed:
            failed.add_row(r.source, r.reason)
        console.print(failed)
    if summary.preview is not None:
        console.print(f"preview: {summary.preview}", highlight=False)
