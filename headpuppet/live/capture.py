"""The ffmpeg arguments that open a live DRIVER (:func:`input_args`; whether a DRIVER is live:
:mod:`headpuppet.media.streams`), and reading it: :class:`FrameSource`, an ffmpeg process decoding
DRIVER to ``(H, W, 3)`` uint8 RGB frames, read by its own thread.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MediaError
from ..media.streams import is_realtime, is_stream
from ..media.video import ffmpeg_exe

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "rtp", "srt", "http", "https", "hls", "pipe")

# ---------------------------------------------------------------------- opening DRIVER
def input_args(spec: str | Path, input_format: str | None = None, extra: list[str] | None = None,
               realtime: bool = False) -> list[str]:
    """ffmpeg arguments that open ``spec`` (ending with ``-i ...``)."""
    s = str(spec)
    args: list[str] = []
    fmt = input_format
    if re.fullmatch(r"\d{1,2}", s) and not Path(s).exists():       # a camera index
        if sys.platform == "darwin":
            fmt, s = fmt or "avfoundation", f"{s}:none"
            args += ["-framerate", "30"]
        elif sys.platform.startswith("linux"):
            fmt, s = fmt or "v4l2", f"/dev/video{s}"
        elif fmt is None:
            raise MediaError(f"camera {s}: give the camera by name with --input-format dshow, "
                             f"e.g. 'video=Integrated Camera'")
    elif s.startswith("/dev/video") and fmt is None and sys.platform.startswith("linux"):
        fmt = "v4l2"
    if s == "-":
        s = "pipe:0"
    elif "://" not in s and not s.startswith("pipe:") and os.path.exists(s):
        s = os.path.abspath(s)            # a file named like an option is never one
    if is_stream(spec):
        # start within half a second (ffmpeg would otherwise read up to 5 s of a stream to learn its
        # format, and then hand those frames over in a burst); --input-args can override
        args += ["-probesize", "65536", "-analyzeduration", "500000"]
    if realtime:
        args += ["-re"]
    if fmt:
        args += ["-f", fmt]
    args += list(extra or [])
    return args + ["-i", s]


# ---------------------------------------------------------------------- reading
@dataclass
class StreamInfo:
    width: int
    height: int
    fps: float          # 0.0 when the stream does not say


_RE_OUT = re.compile(r"^\s*Stream #\d+:\d+.*: Video: rawvideo.*?[, ](\d{2,5})x(\d{2,5})[, \[]")
_RE_FPS = re.compile(r"([\d.]+) fps")
_RE_TBR = re.compile(r"([\d.]+) tbr")


class FrameSource:
    """DRIVER decoded by an ffmpeg process into ``(H, W, 3) uint8 RGB`` frames, read by a thread.

    Iterating yields ``(index, frame, t_decoded)`` (``time.perf_counter()`` when the frame was fully
    read) until the stream ends or :meth:`close` is called. With ``drop_late`` only the newest
    frame waits for the consumer (older ones are counted in ``dropped``); otherwise up to
    ``buffer`` frames wait and ffmpeg (so the source) is held back when they are full.

    Args:
        spec: see :func:`input_args`.
        max_width: frames wider than this are scaled down inside ffmpeg (faster detection).
        open_timeout: seconds to wait for the first header of the stream.
    """

    def __init__(self, spec: str | Path, *, input_format: str | None = None, extra_args: list[str] | None = None,
                 realtime: bool = False, drop_late: bool | None = None, max_width: int = 640,
                 open_timeout: float = 30.0, buffer: int = 8):
        self.spec = str(spec)
        self.drop_late = (is_realtime(spec) or realtime) if drop_late is None else bool(drop_late)
        self.decoded = 0
        self.dropped = 0
        self._stderr: deque[str] = deque(maxlen=40)
        self._closed = threading.Event()
        self._header = threading.Event()
        self._info: StreamInfo | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=1 if self.drop_late else max(1, buffer))
        self._error: BaseException | None = None
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-loglevel", "info"]
        if str(spec) != "-":
            cmd.append("-nostdin")
        cmd += input_args(spec, input_format, extra_args, realtime)
        vf = f"scale=w='min(iw,{int(max_width)})':h=-2" if max_width else "null"
        cmd += ["-map", "0:v:0", "-an", "-sn", "-vf", vf, "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        try:
            self._proc = subprocess.Popen(cmd, stdin=None if str(spec) == "-" else subprocess.DEVNULL,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
                                          start_new_session=True)   # Ctrl-C is ours to handle, not ffmpeg's
        except OSError as exc:
            raise MediaError(f"cannot run ffmpeg to read {spec} ({exc.strerror})") from None
        threading.Thread(target=self._read_stderr, daemon=True, name="hp-ffmpeg-log").start()
        if not self._header.wait(open_timeout) or self._info is None:
            self.close()
            raise MediaError(f"{spec}: no video came from it{self._reason(f' within {open_timeout:g} s')}")
        self._thread = threading.Thread(target=self._read_frames, daemon=True, name="hp-reader")
        self._thread.start()

    @property
    def info(self) -> StreamInfo:
        assert self._info is not None
        return self._info

    def reason(self, default: str = "") -> str:
        """`` (the last thing ffmpeg said)``, or ``default``."""
        return self._reason(default)

    def _reason(self, default: str = "") -> str:
        lines = [ln for ln in self._stderr if ln.strip() and not ln.startswith(("  ", "Input #", "Output #"))]
        return f" ({lines[-1].strip()[:200]})" if lines else default

    def _read_stderr(self) -> None:
        output = False
        for raw in iter(self._proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self._stderr.append(line)
            if line.startswith("Output #"):
                output = True
            m = _RE_OUT.match(line) if output and self._info is None else None
            if m:
                fps = _RE_FPS.search(line) or _RE_TBR.search(line)
                self._info = StreamInfo(int(m.group(1)), int(m.group(2)), float(fps.group(1)) if fps else 0.0)
                self._header.set()
        self._header.set()   # ffmpeg ended (maybe before any header)

    def _read_frames(self) -> None:
        w, h = self.info.width, self.info.height
        n = w * h * 3
        out = self._proc.stdout
        try:
            while not self._closed.is_set():
                buf = bytearray()
                while len(buf) < n:
                    chunk = out.read(n - len(buf))
                    if not chunk:
                        break
                    buf += chunk
                if len(buf) < n:
                    break
                frame = np.frombuffer(bytes(buf), np.uint8).reshape(h, w, 3)
                item = (self.decoded, frame, time.perf_counter())
                self.decoded += 1
                if self.drop_late:
                    try:
                        self._queue.put_nowait(item)
                    except queue.Full:
                        try:
                            self._queue.get_nowait()
                            self.dropped += 1
                        except queue.Empty:
                            pass
                        self._queue.put_nowait(item)
                else:
                    while not self._closed.is_set():
                        try:
                            self._queue.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except BaseException as exc:   # reported to the consumer (unless we were closed)
            if not self._closed.is_set():
                self._error = exc
        finally:
            self._put_end()

    def _put_end(self) -> None:
        while True:
            try:
                self._queue.put(None, timeout=0.1)
                return
            except queue.Full:
                if self._closed.is_set():
                    try:
                        self._queue.get_nowait()
                    except queue.Empty:
                        pass

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, float]]:
        while True:
            item = self._queue.get()
            if item is None:
                break
            yield item
        if self._error is not None and not self._closed.is_set():
            raise MediaError(f"{self.spec}: reading failed ({self._error})")
        if not self._closed.is_set():
            self._proc.wait()
            if self._proc.returncode not in (0, None) and self.decoded == 0:
                raise MediaError(f"{self.spec}: ffmpeg could not decode it{self._reason()}")

    def close(self) -> None:
        self._closed.set()
        if self._proc.poll() is None:
            self._proc.terminate()          # nothing of ffmpeg's output is wanted any more
            try:
                self._proc.wait(0.5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        for f in (self._proc.stdout, self._proc.stderr):
            try:
                f.close()
            except Exception:
                pass

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def parse_input_args(text: str | None) -> list[str]:
    return shlex.split(text) if text else []
