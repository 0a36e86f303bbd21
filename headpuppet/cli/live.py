"""``headpuppet live``: drive the SOURCE person from a camera or a stream, frame by frame, as it arrives.

``headpuppet animate SOURCE... DRIVER`` comes here too when DRIVER is a stream (``-``, a camera, a
named pipe, a URL). See :mod:`headpuppet.live` for what is done per frame.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..errors import MediaError
from ..fewshot.api import check_writable
from ._common import RichReporter, default_device, err_console, handle_errors


def run_live_command(state, sources: list[str], driver: str, *, output: str | None, preview: bool = False,
                     checkpoint: Path | None = None, finetune_steps: int | None = 0, relative: bool = True,
                     smooth: float = 1.0, side_by_side: bool = False, paste: bool = False,
                     device: str | None = None, detector: str | None = None, shots: int = 8,
                     input_format: str | None = None, input_args: str | None = None, realtime: bool = False,
                     drop: bool | None = None, fps: float | None = None, max_frames: int | None = None,
                     duration: float | None = None, stream_format: str | None = None,
                     reference_frames: int = 5, stats_path: Path | None = None, max_width: int = 640,
                     precision: str = "auto", compile_g: bool = False) -> None:
    """The live run behind ``live`` and ``animate`` with a stream DRIVER; prints only to stderr
    (stdout may be the video stream)."""
    # lazy: ..live brings cv2 and scipy (+0.24 s), .session torch (+1.4 s) at CLI start-up (measured)
    from ..live import (FfmpegSink, FrameSource, LiveAnimator, PreviewSink, default_live_output, has_display,
                        is_realtime, parse_input_args, run_live)
    from ..live.pipeline import warm_up
    from ..fewshot.session import load_person

    if not sources:
        raise MediaError("give at least one SOURCE and one DRIVER: headpuppet live photo.jpg /dev/video0")
    if output is None and not preview:
        if has_display():
            preview = True
        else:
            output = str(default_live_output(sources))
    if output not in (None, "-") and "://" not in output and not output.startswith("/dev/"):
        check_writable(Path(output))
    if preview and not has_display():
        raise MediaError("--preview needs a display (DISPLAY is not set here); write to a file or to stdout "
                         "with -o instead")
    device = default_device(device)
    reporter = RichReporter(console=err_console)
    loaded = load_person(sources, checkpoint=checkpoint, device=device, pm=state.pm, detector=detector,
                         shots=shots, finetune_steps=finetune_steps, reporter=reporter, precision=precision)
    if compile_g:  # before the stream opens: frames that came during the compile would wait for it
        with reporter.task("compile G (once per model)"):
            warm_up(loaded.animator, loaded.person, compile=True)
    source = FrameSource(driver, input_format=input_format, extra_args=parse_input_args(input_args),
                         realtime=realtime, drop_late=drop, max_width=max_width)
    sinks: list = []
    try:
        rate = fps or source.info.fps or 25.0
        live = LiveAnimator(loaded.animator, loaded.person, detector=loaded.detector, relative=relative,
                            smooth=smooth, fps=rate, side_by_side=side_by_side, paste=paste,
                            reference_frames=reference_frames, compile=compile_g)
        size = live.output_size()
        if output is not None:
            sinks.append(FfmpegSink(output, rate, size, fmt=stream_format,
                                    wallclock=source.drop_late and is_realtime(driver)))
        if preview:
            sinks.append(PreviewSink())
        where = " and ".join(([("stdout" if output == "-" else output)] if output else [])
                             + (["a preview window"] if preview else []))
        err_console.print(f"live: {driver} ({source.info.width}x{source.info.height}, "
                          f"{source.info.fps:g} fps) -> {where}, {size[0]}x{size[1]} at {rate:g} fps; "
                          f"{'late frames are dropped' if source.drop_late else 'every frame is used'}; "
                          "Ctrl-C stops", highlight=False, soft_wrap=True)
        stats = run_live(live, source, sinks, max_frames=max_frames, duration=duration)
    finally:
        source.close()
        errors = []
        for sink in sinks:
            try:
                sink.close()
            except MediaError as exc:
                errors.append(exc)
    if errors:
        raise errors[0]
    if stats.processed == 0 and stats.stopped == "end of stream":
        raise MediaError(f"{driver}: the stream ended before any frame came{source.reason()}")
    for line in stats.lines() + [f"model on {device}; source {loaded.source}"]:
        err_console.print(line, highlight=False, soft_wrap=True)
    if output not in (None, "-") and "://" not in output and not output.startswith("/dev/") and stats.processed:
        err_console.print(f"wrote {output}", highlight=False, soft_wrap=True)
    if stats_path is not None:
        stats_path.parent.mkdir(parents=True, exist_ok=True)
        stats_path.write_text(json.dumps(stats.as_dict(), indent=1))


def register(app: typer.Typer, state) -> None:
    @app.command("live", rich_help_panel="Pipeline")
    @handle_errors
    def live(
        paths: List[str] = typer.Argument(..., metavar="SOURCE... DRIVER",
                                          help="SOURCE as for animate (photos, a folder, a video, a fine-tuned "
                                               "person folder); DRIVER a camera (/dev/video0 or 0), '-' for "
                                               "stdin, a named pipe, a URL ffmpeg reads (rtsp://, udp://, ...) "
                                               "or a video file."),
        output: Optional[str] = typer.Option(None, "-o", "--output",
                                             help="A video file, '-' for stdout (a stream another program "
                                                  "reads), a URL (udp://, rtmp://...) or a v4l2 device "
                                                  "(virtual camera) \\[default: a preview window where a "
                                                  "display exists, else <source>_live.mp4]."),
        preview: bool = typer.Option(False, "--preview", help="Show the result in a window (q or Esc stops)."),
        checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                                  help="Run or checkpoint folder \\[default: weights/demo]."),
        finetune_steps: int = typer.Option(0, "--finetune-steps", min=0,
                                           help="Fine-tune on the source shots first (paper 3.4)."),
        relative: bool = typer.Option(True, "--relative/--absolute",
                                      help="Move the source's own landmarks by the driver's motion relative to "
                                           "its first frames, or drive with the driver's landmarks as they are."),
        smooth: float = typer.Option(1.0, "--smooth", min=0.0,
                                     help="Landmark smoothing, as animate's sigma in frames (done causally)."),
        no_smooth: bool = typer.Option(False, "--no-smooth", help="Do not smooth the driver's landmarks."),
        side_by_side: bool = typer.Option(False, "--side-by-side", help="Write driver crop | result."),
        paste: bool = typer.Option(False, "--paste-back", help="Put the result back into the full source photo."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda \\[default: cuda if available]."),
        detector: Optional[str] = typer.Option(None, "--detector",
                                               help="Landmark detector plugin \\[default: the checkpoint's]."),
        shots: int = typer.Option(8, "--shots", "-k", min=1, help="Frames sampled when SOURCE is a video."),
        input_format: Optional[str] = typer.Option(None, "--input-format",
                                                   help="ffmpeg input format (v4l2, avfoundation, dshow, "
                                                        "mpegts, ...) \\[default: guessed]."),
        input_args: Optional[str] = typer.Option(None, "--input-args",
                                                 help="More ffmpeg input options, e.g. "
                                                      "\"-video_size 640x480 -framerate 30\"."),
        realtime: bool = typer.Option(False, "--realtime",
                                      help="Play a video-file DRIVER at its own speed, like a camera."),
        drop: Optional[bool] = typer.Option(None, "--drop/--no-drop",
                                            help="Drop late frames to stay real-time \\[default: for cameras, "
                                                 "URLs and --realtime; not for stdin, pipes and files]."),
        fps: Optional[float] = typer.Option(None, "--fps", min=1.0,
                                            help="Output frame rate \\[default: the stream's, else 25]."),
        max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after this many frames."),
        duration: Optional[float] = typer.Option(None, "--duration", min=0.1, help="Stop after this many seconds."),
        stream_format: Optional[str] = typer.Option(None, "--format",
                                                    help="Container of a stream output: for '-' mpegts (H.264, "
                                                         "default), nut (raw RGB), y4m, rawvideo, matroska."),
        reference_frames: int = typer.Option(5, "--reference-frames", min=1,
                                             help="Relative mode: the driver's first N frames with a face, "
                                                  "averaged, are mapped onto the source's pose."),
        stats: Optional[Path] = typer.Option(None, "--stats", help="Write per-frame timings as JSON here."),
        compile_g: bool = typer.Option(False, "--compile",
                                       help="Compile G with torch.compile before the stream starts (needs a "
                                            "C++ compiler; tens of seconds once, then faster frames)."),
    ) -> None:
        """Animate live from a camera or a stream, frame by frame as it arrives; latency printed at the end.

        Frames are written as they are made: to a file, to stdout (-o -) for another program, to a URL
        or a virtual camera, or to a preview window."""
        *sources, driver = paths
        run_live_command(state, sources, driver, output=output, preview=preview, checkpoint=checkpoint,
                         finetune_steps=finetune_steps, relative=relative, smooth=0.0 if no_smooth else smooth,
                         side_by_side=side_by_side, paste=paste, device=device, detector=detector, shots=shots,
                         input_format=input_format, input_args=input_args, realtime=realtime, drop=drop, fps=fps,
                         max_frames=max_frames, duration=duration, stream_format=stream_format,
                         reference_frames=reference_frames, stats_path=stats, compile_g=compile_g)
