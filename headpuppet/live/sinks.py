"""Where live frames go: :class:`FfmpegSink` (a video file, stdout, a URL or a v4l2 device, through
an ffmpeg process) and :class:`PreviewSink` (a window); either raises :class:`StreamClosed` when
its consumer goes away.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from ..errors import HeadpuppetError, MediaError
from ..media.video import ffmpeg_exe


STREAM_FORMATS = ("mpegts", "nut", "y4m", "rawvideo", "matroska")


class FfmpegSink:
    """Frames written as they are made, through an ffmpeg process, to ``target``:

    * a video file (``.mp4``, ``.mkv``, ...; H.264, written directly so a stopped run keeps what it had);
    * ``-``: stdout, as a stream another program reads (``fmt``: ``mpegts`` H.264 by default,
      ``nut`` raw RGB, ``y4m``, ``rawvideo`` bare RGB frames, ``matroska``);
    * a URL (``udp://``, ``tcp://``, ``srt://`` as MPEG-TS; ``rtmp://`` as FLV; ``rtsp://`` to a server);
    * a v4l2 device (``/dev/videoN``, e.g. a v4l2loopback virtual camera for a video call).

    ``wallclock`` stamps frames with the time they are written and keeps a constant frame rate
    (frames repeated where the renderer was late), so a recording of a live source plays in real time.
    """

    def __init__(self, target: str | Path, fps: float, size: tuple[int, int], *, fmt: str | None = None,
                 wallclock: bool = False):
        self.target = str(target)
        self.size = (int(size[0]), int(size[1]))     # (W, H)
        self.frames = 0
        fps_s = f"{float(fps):g}"
        w, h = self.size
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        # wallclock: frames stamped on arrival (an input frame rate would override the stamps)
        cmd += ["-use_wallclock_as_timestamps", "1"] if wallclock else ["-r", fps_s]
        cmd += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-i", "pipe:0"]
        if wallclock:
            cmd += ["-fps_mode", "cfr", "-r", fps_s]
        even = ["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"] if (w % 2 or h % 2) else []
        h264 = even + ["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]
        t = self.target
        self._file: Path | None = None
        if t == "-":
            fmt = fmt or "mpegts"
            if fmt not in STREAM_FORMATS:
                raise MediaError(f"unknown stream format {fmt!r}; use one of {', '.join(STREAM_FORMATS)}")
            cmd += {"mpegts": h264 + ["-f", "mpegts"],
                    "matroska": h264 + ["-f", "matroska"],
                    "nut": ["-c:v", "rawvideo", "-pix_fmt", "rgb24", "-f", "nut"],
                    "y4m": ["-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe"],
                    "rawvideo": ["-f", "rawvideo", "-pix_fmt", "rgb24"]}[fmt] + ["pipe:1"]
        elif t.startswith("/dev/video"):
            cmd += ["-pix_fmt", "yuv420p", "-f", fmt or "v4l2", t]
        elif "://" in t:
            scheme = t.split("://", 1)[0].lower()
            default = {"rtmp": "flv", "rtmps": "flv", "rtsp": "rtsp"}.get(scheme, "mpegts")
            cmd += h264 + ["-f", fmt or default, t]
        else:
            path = Path(t)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise MediaError(f"{path.parent}: cannot create the output folder ({exc.strerror})") from None
            cmd += even + ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p"]
            if fmt:
                cmd += ["-f", fmt]
            self._file = path.absolute()
            cmd += [str(self._file)]
        self._err = deque(maxlen=20)
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=None if t == "-" else subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise MediaError(f"cannot run ffmpeg to write {t} ({exc.strerror})") from None
        threading.Thread(target=self._drain, daemon=True, name="hp-writer-log").start()

    def _drain(self) -> None:
        for raw in iter(self._proc.stderr.readline, b""):
            self._err.append(raw.decode("utf-8", "replace").rstrip())

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if (w, h) != self.size:
            raise ValueError(f"frame is {w}x{h}, the stream is {self.size[0]}x{self.size[1]}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame, np.uint8).tobytes())
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise StreamClosed(f"{self.target}: the output was closed ({self._reason()})") from None
        self.frames += 1

    def _reason(self) -> str:
        lines = [ln for ln in self._err if ln.strip()]
        return lines[-1][:200] if lines else "ffmpeg stopped"

    def close(self) -> None:
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            rc = self._proc.wait(60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            rc = self._proc.wait()
        if self.frames == 0 and self._file is not None:
            self._file.unlink(missing_ok=True)      # no frame came: leave no broken file behind
        elif rc != 0 and self.frames and self.target != "-":
            raise MediaError(f"{self.target}: ffmpeg failed to finish it ({self._reason()})")


class StreamClosed(HeadpuppetError):
    """The consumer of an output stream went away (a closed pipe, a closed window): stop cleanly."""


def has_display() -> bool:
    """Whether a window can be opened (a display on Linux; always on macOS and Windows)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class PreviewSink:
    """A window showing each output frame (OpenCV); ``q`` or Esc closes it and stops the run."""

    def __init__(self, title: str = "headpuppet live", scale: int | None = None):
        if not has_display():
            raise MediaError("--preview needs a display (none here: DISPLAY is not set); write to a file "
                             "or to stdout with -o instead")
        self.cv2 = cv2
        self.title = title
        self.scale = scale
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise MediaError(f"cannot open a preview window ({str(exc).strip().splitlines()[-1]}); "
                             "use -o instead") from None

    def write(self, frame: np.ndarray) -> None:
        cv2 = self.cv2
        img = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        scale = self.scale or max(1, 384 // max(frame.shape[:2]))
        if scale > 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        cv2.imshow(self.title, img)
        key = cv2.waitKey(1) & 0xFF
        if key in (27, ord("q")):
            raise StreamClosed("preview window closed")

    def close(self) -> None:
        try:
            self.cv2.destroyWindow(self.title)
            self.cv2.waitKey(1)
        except Exception:
            pass


def default_live_output(sources: list[str]) -> Path:
    first = Path(sources[0])
    return Path(f"{first.name if first.is_dir() else first.stem}_live.mp4")
