"""Live driving: animate a person from a camera or a stream, one frame at a time, as frames arrive.

``animate`` (:func:`headpuppet.inference.animate`) knows the whole driver before it renders: pass 1
finds every frame's landmarks, chooses one crop box and the most neutral reference frame, and smooths
with a zero-phase filter; pass 2 renders. A live driver has no "whole", so this module does the same
steps in one causal pass per frame (Zakharov et al. 2019, section 4, "puppeteering", in real time):

1. detect the driver's face (the model's landmark detector, in tracking mode);
2. the crop box is fixed from the first frame with a face; frames without a face hold the last
   landmarks (counted), and before the first face the person is shown still;
3. smooth causally: a One-Euro filter (Casiez et al. 2012) per coordinate, whose minimum cut-off is
   the -3 dB frequency of ``animate``'s Gaussian of the same ``smooth`` sigma (fps / (7.5 sigma))
   and which opens up when the landmarks move fast, so speech is not delayed;
4. relative mode: the reference is the mean of the first ``reference_frames`` frames with a face
   (the person is assumed to start facing the camera, mouth closed), and
   :func:`headpuppet.retarget.transfer_relative` moves the source's own landmarks by the driver's
   motion relative to it; absolute mode passes the driver's landmarks through;
5. render through :meth:`headpuppet.inference.Animator.render` (so any generator works, including
   the warp-guided one that needs the source shots), compose (paste-back, side-by-side) and write.

Reading runs in its own thread (an ffmpeg process decoding DRIVER to raw RGB), detection in a
second one and rendering in the caller's, so the three overlap. A real-time source (a camera, a
network URL, a file with ``realtime``) never waits for us: when rendering is slower than the
stream, the newest frame is taken and older ones are dropped (counted), so latency stays bounded.
Other sources (stdin, a named pipe, a file) are read at our pace and no frame is dropped.

DRIVER specs (:func:`is_stream`, :func:`input_args`): ``-`` (stdin), a camera (``/dev/video0``, or
``0``), a named pipe, any URL ffmpeg reads (``rtsp://``, ``udp://``, ``tcp://``, ``http://``,
``srt://``...), or a video file. Outputs (:class:`FfmpegSink`): a video file, ``-`` (stdout, a stream
another program reads; MPEG-TS by default), a URL, or a v4l2 device such as a v4l2loopback virtual
camera (``/dev/video10``) that video-call programs can use; :class:`PreviewSink` shows a window.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import stat
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import HeadpuppetError, MediaError

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "rtp", "srt", "http", "https", "hls", "pipe")


# ---------------------------------------------------------------------- what DRIVER is
def is_stream(spec: str | Path) -> bool:
    """True when ``spec`` is a live source rather than a video file or a folder of frames: ``-``,
    a camera index or device, a named pipe or a character device, or a URL such as ``rtsp://...``."""
    s = str(spec)
    if s == "-" or re.fullmatch(r"\d{1,2}", s) and not Path(s).exists():
        return True
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", s) or s.startswith("pipe:"):
        return True
    if s.startswith("/dev/video"):
        return True
    try:
        mode = os.stat(s).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def is_realtime(spec: str | Path) -> bool:
    """Sources that go on whether we read them or not (cameras, network streams): drop late frames."""
    s = str(spec)
    if s == "-" or s.startswith("pipe:"):
        return False
    if re.fullmatch(r"\d{1,2}", s) or s.startswith("/dev/video"):
        return True
    if "://" in s:
        return True
    try:
        return stat.S_ISCHR(os.stat(s).st_mode)
    except OSError:
        return False


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
        from .media.video import ffmpeg_exe

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


# ---------------------------------------------------------------------- writing
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
        from .media.video import ffmpeg_exe

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
        import cv2

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


# ---------------------------------------------------------------------- causal smoothing
class OneEuroFilter:
    """The One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) on arrays, per element.

    A first-order low-pass whose cut-off is ``min_cutoff + beta * |speed|`` (Hz; speed in units per
    second, itself low-passed at ``d_cutoff``): steady when still, little lag when moving fast.
    """

    def __init__(self, fps: float, min_cutoff: float, beta: float = 0.0, d_cutoff: float = 1.0):
        self.te = 1.0 / max(float(fps), 1e-3)
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def _alpha(self, cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / self.te)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dx = (x - self.x) / self.te
        a_d = self._alpha(self.d_cutoff)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx))
        self.x = a * x + (1 - a) * self.x
        return self.x.astype(np.float32)

    def reset(self) -> None:
        self.x = self.dx = None


def smoothing_filter(smooth: float, fps: float, size: int) -> OneEuroFilter | None:
    """The causal counterpart of ``animate --smooth SIGMA`` (frames) for landmarks in ``size``-px crops,
    or None for ``smooth <= 0``. Minimum cut-off fps / (7.5 sigma) Hz (the Gaussian's -3 dB point);
    beta 0.05 per crop-px/s at 128 px, so a mouth opening at 100 px/s is followed at ~8 Hz."""
    if smooth <= 0:
        return None
    return OneEuroFilter(fps, min_cutoff=fps / (7.5 * smooth), beta=0.05 * 128.0 / size, d_cutoff=1.0)


# ---------------------------------------------------------------------- the per-frame pipeline
@dataclass
class Tracked:
    """One driver frame after detection and retargeting, ready to render."""

    frame: np.ndarray
    points: np.ndarray            # (68, 2) crop px, what G is driven with
    iris: np.ndarray | None       # (2, 3) or None
    face: bool                    # a face was found in this frame
    still: bool = False           # no face seen yet: the person is shown as is
    detect_ms: float = 0.0


class LiveAnimator:
    """Per-frame, causal ``animate``: ``step(frame) -> output frame`` (see the module docstring).

    :meth:`track` (detection, smoothing, retargeting) and :meth:`render` (G, compositing) can run
    in different threads, one frame apart. Not thread-safe within one of them.
    """

    def __init__(self, animator, person, *, detector=None, relative: bool = True, smooth: float = 1.0,
                 fps: float = 25.0, side_by_side: bool = False, paste: bool = False, reference_frames: int = 5):
        if paste and (person.image is None or person.box is None):
            raise MediaError("--paste-back needs the full source photo, which this source does not have")
        self.animator, self.person = animator, person
        self.detector = detector or animator.make_detector()
        self.relative, self.smooth, self.fps = bool(relative), float(smooth), float(fps or 25.0)
        self.side_by_side, self.paste = bool(side_by_side), bool(paste)
        self.reference_frames = max(1, int(reference_frames))
        self.size = animator.size
        self.use_iris = bool(animator.uses_iris)
        self.src_iris = person.iris[0] if person.iris is not None else None
        self._still: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        """Start again: new crop box and reference from the next frames with a face."""
        self.detector.reset()
        self.box = None
        self._filter = smoothing_filter(self.smooth, self.fps, self.size)
        self._iris_filter = smoothing_filter(self.smooth, self.fps, self.size)
        self._ref: list[np.ndarray] = []
        self._ref_iris: list[np.ndarray] = []
        self._last: tuple[np.ndarray, np.ndarray | None] | None = None
        self.frames = self.faces = self.held = 0

    # -------------------------------------------------------------- track
    def track(self, frame: np.ndarray) -> Tracked:
        from .media.crop import face_crop_box, iris_to_crop, to_crop

        t0 = time.perf_counter()
        frame = np.ascontiguousarray(frame)
        faces = self.detector.detect(frame)
        self.frames += 1
        if faces:
            face = max(faces, key=lambda f: f.area)
            if self.box is None:
                self.box = face_crop_box(face.points, frame.shape[:2])
            pts = to_crop(face.points, self.box, self.size)
            iris = iris_to_crop(face.iris, self.box, self.size) if face.iris is not None else None
            if not (np.isfinite(pts).all() and (iris is None or np.isfinite(iris).all())):
                faces = []
        if not faces:
            if self._last is None:
                return Tracked(frame, self.person.points[0], self.src_iris, False, still=True,
                               detect_ms=(time.perf_counter() - t0) * 1e3)
            self.held += 1
            pts, iris = self._last
            return Tracked(frame, *self._retarget(pts, iris), False, detect_ms=(time.perf_counter() - t0) * 1e3)
        self.faces += 1
        if self._filter is not None:
            pts = self._filter(pts)
            if iris is not None:
                iris = self._iris_filter(iris)
        if len(self._ref) < self.reference_frames:
            self._ref.append(pts)
            if iris is not None:
                self._ref_iris.append(iris)
        self._last = (pts, iris)
        out_pts, out_iris = self._retarget(pts, iris)
        return Tracked(frame, out_pts, out_iris, True, detect_ms=(time.perf_counter() - t0) * 1e3)

    @property
    def reference(self) -> np.ndarray | None:
        """The driver's reference landmarks (crop px): mean of the first frames with a face."""
        return np.mean(self._ref, axis=0) if self._ref else None

    def _retarget(self, pts: np.ndarray, iris: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        from .retarget import transfer_relative

        if not self.relative:
            return pts, iris if self.use_iris else None
        ref = self.reference
        ref_iris = np.mean(self._ref_iris, axis=0) if iris is not None and len(self._ref_iris) == len(self._ref) else None
        use_iris = self.use_iris and ref_iris is not None and self.src_iris is not None
        out, out_iris = transfer_relative(np.stack([ref, pts]), self.person.points[0], 0,
                                          np.stack([ref_iris, iris]) if use_iris else None,
                                          self.src_iris if use_iris else None)
        return out[1], out_iris[1] if out_iris is not None else None

    # -------------------------------------------------------------- render
    def render(self, tracked: Tracked) -> np.ndarray:
        from .media.crop import crop_frame
        from .inference import paste_back

        if tracked.still and self._still is not None:
            fake = self._still
        else:
            iris = tracked.iris[None] if (self.use_iris and tracked.iris is not None) else None
            fake = self.animator.render(self.person, tracked.points[None], iris, batch_size=1)[0]
            if tracked.still:
                self._still = fake
        if self.paste:
            out = paste_back(self.person.image, fake, self.person.box,
                             points=np.stack([tracked.points, self.person.points[0]]))
        else:
            out = fake
        if self.side_by_side:
            frame = tracked.frame
            box = self.box
            if box is None:   # no face yet: the middle square of the frame
                from .media.crop import CropBox

                h, w = frame.shape[:2]
                s = min(h, w)
                box = CropBox((w - s) // 2, (h - s) // 2, s)
            drv = crop_frame(frame, box, out.shape[0])
            out = np.concatenate([drv, out], axis=1)
        return out

    def step(self, frame: np.ndarray) -> np.ndarray:
        return self.render(self.track(frame))

    def output_size(self, frame_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        """(W, H) of the frames :meth:`render` makes."""
        if self.paste:
            h, w = self.person.image.shape[:2]
        else:
            h = w = self.size
        return (w + h if self.side_by_side else w, h)


# ---------------------------------------------------------------------- the run
@dataclass
class LiveStats:
    """What a live run did, with per-frame timings in milliseconds."""

    source: str = ""
    fps_in: float = 0.0
    decoded: int = 0
    processed: int = 0
    dropped: int = 0
    no_face: int = 0
    held: int = 0
    seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)    # decoded -> written
    detect_ms: list[float] = field(default_factory=list)
    render_ms: list[float] = field(default_factory=list)     # G + compositing
    write_ms: list[float] = field(default_factory=list)
    render_cpu_ms: list[float] = field(default_factory=list)   # CPU time of the rendering thread
    cpu_seconds: float = 0.0      # CPU time of the whole process (all its threads) during the run
    stopped: str = "end of stream"
    span: float = 0.0             # seconds from the first frame written to the last

    @property
    def fps_out(self) -> float:
        """Frames made per second while frames were coming (not counting start-up or a stream's
        closing timeout)."""
        if self.processed > 1 and self.span > 0:
            return (self.processed - 1) / self.span
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @staticmethod
    def _q(values: list[float], q: float) -> float:
        return float(np.percentile(values, q)) if values else float("nan")

    def cpu_ms_per_frame(self) -> float | None:
        """CPU time the process spent per frame made (detection, rendering, reading, writing)."""
        return self.cpu_seconds * 1e3 / self.processed if self.processed else None

    def per_frame_ms(self) -> float:
        """Mean time of the slowest stage (what limits the frame rate when stages overlap)."""
        stages = [np.mean(v) for v in (self.detect_ms, self.render_ms) if v]
        return float(max(stages)) if stages else float("nan")

    def as_dict(self) -> dict:
        def summary(v):
            return {"mean": float(np.mean(v)) if v else None, "median": self._q(v, 50) if v else None,
                    "p90": self._q(v, 90) if v else None, "max": float(np.max(v)) if v else None}

        return {"source": self.source, "fps_in": self.fps_in, "decoded": self.decoded, "processed": self.processed,
                "dropped": self.dropped, "no_face": self.no_face, "held": self.held, "seconds": self.seconds,
                "fps_out": self.fps_out, "span": self.span, "stopped": self.stopped,
                "latency_ms": summary(self.latency_ms), "detect_ms": summary(self.detect_ms),
                "render_ms": summary(self.render_ms), "write_ms": summary(self.write_ms),
                "render_cpu_ms": summary(self.render_cpu_ms), "cpu_seconds": self.cpu_seconds,
                "cpu_ms_per_frame": self.cpu_ms_per_frame(),
                "frames": {"latency_ms": self.latency_ms, "detect_ms": self.detect_ms,
                           "render_ms": self.render_ms, "write_ms": self.write_ms}}

    def lines(self) -> list[str]:
        out = [f"{self.processed} frames made in {self.seconds:.1f} s ({self.fps_out:.1f} frames/s while they came) from "
               f"{self.decoded} decoded ({self.stopped})"
               + (f"; {self.dropped} dropped to keep up" if self.dropped else "")]
        if self.no_face:
            out.append(f"{self.no_face} frame(s) without a face" + (f" ({self.held} held the last face)" if self.held else ""))
        if self.latency_ms:
            out.append(f"latency per frame (decoded -> written): median {self._q(self.latency_ms, 50):.0f} ms, "
                       f"90% {self._q(self.latency_ms, 90):.0f} ms, max {max(self.latency_ms):.0f} ms")
            out.append(f"per frame: detect {np.mean(self.detect_ms):.1f} ms, render {np.mean(self.render_ms):.1f} ms, "
                       f"write {np.mean(self.write_ms):.1f} ms (detection overlaps rendering); CPU time: "
                       f"render {np.mean(self.render_cpu_ms):.1f} ms, whole process {self.cpu_ms_per_frame():.1f} ms")
        if self.fps_in and self.processed:
            budget = 1000.0 / self.fps_in
            need = self.per_frame_ms()
            if self.dropped == 0 and need <= budget * 1.02:
                out.append(f"keeps up with {self.fps_in:g} fps ({need:.0f} ms of {budget:.0f} ms per frame)")
            else:
                out.append(f"does not keep up with {self.fps_in:g} fps: {need:.0f} ms per frame where "
                           f"{budget:.0f} ms are available, {1000.0 / need:.1f} frames/s at most")
        return out


def run_live(live: LiveAnimator, source: FrameSource, sinks: list, *, max_frames: int | None = None,
             duration: float | None = None, on_frame: Callable[[int], None] | None = None) -> LiveStats:
    """Drive ``live`` from ``source`` into every sink until the stream ends, ``max_frames`` frames
    were made, ``duration`` seconds passed, a sink closed (:class:`StreamClosed`) or Ctrl-C.

    Detection runs in a thread one frame ahead of rendering. The sinks are closed by the caller.
    """
    stats = LiveStats(source=source.spec, fps_in=source.info.fps)
    tracked_q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    failure: list[BaseException] = []

    # detection works one frame ahead of rendering, and takes its frame only when the renderer has
    # taken the previous one, so the frame is as fresh as it can be (late ones were dropped meanwhile)
    want = threading.Semaphore(1)

    def detect_loop() -> None:
        try:
            frames = iter(source)
            while not stop.is_set():
                while not want.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                try:
                    _, frame, t_dec = next(frames)
                except StopIteration:
                    break
                if stop.is_set():
                    break
                tr = live.track(frame)
                while not stop.is_set():
                    try:
                        tracked_q.put((tr, t_dec), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:
            failure.append(exc)
        finally:
            while True:
                try:
                    tracked_q.put(None, timeout=0.1)
                    break
                except queue.Full:
                    if stop.is_set():
                        try:
                            tracked_q.get_nowait()
                        except queue.Empty:
                            pass

    worker = threading.Thread(target=detect_loop, daemon=True, name="hp-detect")
    t0 = t_first = time.perf_counter()
    cpu0 = time.process_time()
    worker.start()
    try:
        while True:
            item = tracked_q.get()
            if item is None:
                break
            tr, t_dec = item
            want.release()
            t1, c1 = time.perf_counter(), time.thread_time()
            out = live.render(tr)
            t2, c2 = time.perf_counter(), time.thread_time()
            for sink in sinks:
                sink.write(out)
            t3 = time.perf_counter()
            stats.processed += 1
            stats.no_face += 0 if tr.face else 1
            stats.detect_ms.append(tr.detect_ms)
            stats.render_ms.append((t2 - t1) * 1e3)
            stats.render_cpu_ms.append((c2 - c1) * 1e3)
            stats.write_ms.append((t3 - t2) * 1e3)
            stats.latency_ms.append((t3 - t_dec) * 1e3)
            if stats.processed == 1:
                t_first = t3
            stats.span = t3 - t_first
            if on_frame is not None:
                on_frame(stats.processed)
            if max_frames is not None and stats.processed >= max_frames:
                stats.stopped = f"{max_frames} frames"
                break
            if duration is not None and t3 - t0 >= duration:
                stats.stopped = f"{duration:g} s"
                break
    except StreamClosed as exc:
        stats.stopped = str(exc)
    except KeyboardInterrupt:
        stats.stopped = "interrupted"
    finally:
        t_end = time.perf_counter()
        stop.set()
        source.close()
        worker.join(10)
    stats.seconds = t_end - t0
    stats.cpu_seconds = time.process_time() - cpu0
    stats.decoded, stats.dropped, stats.held = source.decoded, source.dropped, live.held
    if failure and not isinstance(failure[0], (KeyboardInterrupt,)):
        exc = failure[0]
        if isinstance(exc, HeadpuppetError):
            raise exc
        raise MediaError(f"{source.spec}: {type(exc).__name__}: {exc}") from exc
    return stats


def parse_input_args(text: str | None) -> list[str]:
    return shlex.split(text) if text else []


def default_live_output(sources: list[str]) -> Path:
    first = Path(sources[0])
    return Path(f"{first.name if first.is_dir() else first.stem}_live.mp4")

