"""Pass 1 of ``animate``, the driver's landmarks: in the calling process, or in a helper process that
starts before the model loads.

:func:`detect_driver` finds the largest face's landmarks in every driver frame (on several detector
threads, :mod:`headpuppet.media.detection`); :mod:`headpuppet.fewshot.pipeline` turns them into ONE
crop box and the track G is driven with.

**Why a helper process.** ``headpuppet animate`` spends its first 2 s or so starting: importing
torch, loading the model, preparing the photo, mostly on one core while the other waits. Pass 1
needs none of that, only the landmark detector. :class:`DriverTrackJob` runs :func:`detect_driver` in
a child Python process (this module's :func:`_child`), started before torch is
imported, so the landmarks are found on the core that would otherwise wait. The child runs at a
lower priority (``nice`` :data:`NICE`): it takes the time the command leaves free (the start-up, the
waits) and little of the time that fine-tuning or G need. When the render needs the landmarks it
waits for the rest (the child then has both cores). The landmarks are the same as in-process, frame
for frame (the same detectors and blocks; tested).

Anything that goes wrong in the child (a crash, an unexpected error, another detector than the model
turns out to want, too little CPU while the caller waits: other programs keep every core busy) sends
the work back to the calling process, which detects the driver itself, as
before: the helper only ever makes ``animate`` faster, and every error a user sees comes from the same
code as without it. A driver without a face fails at once either way (:class:`NoFaceError`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import MediaError, NoFaceError
from ..media.detection import BLOCK_FRAMES, close_detector, detect_frames, detection_threads
from ..plugins import DEFAULT_DETECTOR, env_plugin_manager, make_plugin_manager, registry
from ..progress import NULL, Reporter
from .sources import Driver, open_driver

log = logging.getLogger(__name__)

__all__ = ["RawTrack", "detect_driver", "driver_block", "DriverTrackJob", "NICE"]

#: frames per detection block on long drivers (:data:`LONG_DRIVER_FRAMES` or more) whose frames
#: take at most :data:`SMALL_FRAME_BYTES`
DRIVER_BLOCK_FRAMES = 64
LONG_DRIVER_FRAMES = 512
SMALL_FRAME_BYTES = 2**20

#: the helper process's niceness (0 = the caller's priority, 19 = the lowest): it gets the cores when
#: the command leaves them idle, hardly any while torch works (the quick start with fine-tuning took
#: 0.95x the time it took at niceness 10, four alternating pairs)
NICE = 19
#: ``HEADPUPPET_LANDMARK_HELPER=off`` (or 0, no, false): pass 1 in the calling process, as before
HELPER_ENV = "HEADPUPPET_LANDMARK_HELPER"

#: errors of the child that are the driver's fault: raised in the caller as they are (the in-process
#: pass would raise the same, after detecting every frame again)
_DRIVER_ERRORS = {"NoFaceError": NoFaceError, "MediaError": MediaError}


def driver_block(driver: Driver) -> int:
    """Frames per detection block of pass 1 (:mod:`headpuppet.media.detection`): each block starts
    by looking for every face twice (about 20 ms with mediapipe against 4 ms a tracked frame), so
    longer blocks cost less: 0.92x the time of pass 1 on a 60 s 512 px driver with 64 frames against
    32. On short drivers fewer blocks share out worse between the threads (1.05x on 183 frames), and
    the blocks in flight hold their frames: drivers under :data:`LONG_DRIVER_FRAMES` frames, or with
    frames over 1 MB (larger than about 590x590), keep :data:`~headpuppet.media.detection.BLOCK_FRAMES`."""
    small = driver.width * driver.height * 3 <= SMALL_FRAME_BYTES
    return DRIVER_BLOCK_FRAMES if small and driver.num_frames >= LONG_DRIVER_FRAMES else BLOCK_FRAMES


@dataclass
class RawTrack:
    """The driver's landmarks in frame pixels, before the crop."""

    points: np.ndarray            # (T, 68, 2) float32; NaN where no face was found
    found: np.ndarray             # (T,) bool
    iris: np.ndarray | None       # (T, 2, 3) float32 (cx, cy, r), NaN where none; None: the detector has no iris
    hw: tuple[int, int]           # the frames' (H, W)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = dict(points=self.points, found=self.found, hw=np.asarray(self.hw, np.int64))
        if self.iris is not None:
            arrays["iris"] = self.iris
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "RawTrack":
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            hw = tuple(int(v) for v in z["hw"])
            return cls(z["points"], z["found"], z["iris"] if "iris" in z.files else None, (hw[0], hw[1]))


def detect_driver(driver: Driver, detector, reporter: Reporter | None = None) -> RawTrack:
    """Every driver frame's largest face, on one detector or (a list) one thread per detector.

    Raises :class:`NoFaceError` when no frame shows a face."""
    reporter = reporter or NULL
    detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
    has_iris = bool(getattr(detectors[0], "has_iris", False))
    nan_points = np.full((68, 2), np.nan, np.float32)
    nan_iris = np.full((2, 3), np.nan, np.float32)
    pts, found, irises = [], [], []
    hw = (driver.height, driver.width)
    with reporter.task("landmarks", total=driver.num_frames) as task:
        for frame, face in detect_frames(driver.frames(), detectors, block=driver_block(driver)):
            hw = frame.shape[:2]
            pts.append(face.points if face is not None else nan_points)
            irises.append(face.iris if face is not None and face.iris is not None else nan_iris)
            found.append(face is not None)
            task.advance(1)
    found_arr = np.asarray(found, bool)
    if not found_arr.any():
        raise NoFaceError(f"no face found in any frame of the driver {driver.path}; use a video that shows a face")
    points = np.stack(pts).astype(np.float32, copy=False)
    iris = np.stack(irises).astype(np.float32, copy=False) if has_iris else None
    return RawTrack(points, found_arr, iris, (int(hw[0]), int(hw[1])))


# ---------------------------------------------------------------------- the helper process
class DriverTrackJob:
    """:func:`detect_driver` in a child process, started with :meth:`start`; :meth:`result` waits for it.

    Always :meth:`cancel` it when done (``result`` does); the child also ends when this process does
    (it watches its stdin)."""

    def __init__(self, proc: subprocess.Popen, detector: str, num_frames: int):
        self.detector = detector
        self.num_frames = num_frames
        self.seconds: float | None = None  # the child's own time for the pass, once done
        self._proc = proc
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._reader = threading.Thread(target=self._read, name="hp-drivertrack", daemon=True)
        self._reader.start()

    @classmethod
    def start(cls, driver: Driver, detector: str | None = None, pm=None) -> "DriverTrackJob | None":
        """Start finding ``driver``'s landmarks with the detector plugin ``detector`` (default: the
        default detector) in a child process; None where that cannot be done the same way there.

        The child makes its own plugin manager (:func:`~headpuppet.plugins.env_plugin_manager`, as the CLI does),
        so it only takes detectors of the project's own plugins: another one might not be there, or
        be made differently from ``pm``'s. ``HEADPUPPET_LANDMARK_HELPER=off`` in the environment turns
        the helper off (a machine whose cores are all busy with other work: a helper at the lowest
        priority would then get little of them while ``animate`` waits for it)."""
        if os.environ.get(HELPER_ENV, "").strip().lower() in ("0", "off", "no", "false"):
            return None
        name = detector or DEFAULT_DETECTOR
        try:
            entry = registry(pm if pm is not None else make_plugin_manager(), "landmarks").entries.get(name)
        except Exception as exc:  # noqa: BLE001 - plugins that fail to load: the caller's own pass says so
            log.debug("landmarks in this process: %s", exc)
            return None
        if entry is None or entry.unavailable or not entry.first_party:
            log.debug("landmarks in this process: detector %r is not one of the project's own", name)
            return None
        # the child imports what this process imports (this very headpuppet: a checkout put on
        # sys.path, say), and its stderr (native log lines, a traceback when it is interrupted)
        # reaches the terminal only with -vv
        spec = {"driver": str(driver.path), "fps": driver.fps, "detector": name, "sys_path": sys.path}
        quiet = not (os.environ.get("HEADPUPPET_NATIVE_LOGS") or log.isEnabledFor(logging.DEBUG))
        try:
            proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(spec)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL if quiet else None,
                                    close_fds=True)
        except OSError as exc:
            log.debug("landmarks in this process: cannot start the helper (%s)", exc)
            return None
        return cls(proc, name, driver.num_frames)

    def _read(self) -> None:
        out = self._proc.stdout
        try:
            while line := out.readline():
                kind, _, rest = line.rstrip(b"\n").partition(b" ")
                if kind == b"p":
                    self._events.put(("progress", int(rest)))
                elif kind == b"r":
                    seconds, size = rest.split()
                    self.seconds = float(seconds)
                    self._events.put(("result", out.read(int(size))))
                elif kind == b"e":
                    self._events.put(("error", json.loads(rest)))
        except Exception as exc:  # noqa: BLE001 - a garbled stream: the caller detects the driver itself
            self._events.put(("error", {"type": type(exc).__name__, "message": str(exc)}))
        finally:
            self._events.put(("end", None))

    def result(self, detector: str | None, reporter: Reporter | None = None) -> RawTrack | None:
        """The child's :class:`RawTrack`, waiting for it (progress on the ``landmarks`` bar); None when
        it was made with another detector than ``detector`` (the name of the one to use) or the child
        failed: the caller then detects the driver itself. A driver's own error (no face in it) is
        raised here as the in-process pass would raise it."""
        reporter = reporter or NULL
        try:
            if detector != self.detector:
                log.debug("landmarks in this process: the helper used %r, the model wants %r", self.detector, detector)
                return None
            cpu = _CpuWatch(self._proc.pid)
            with reporter.task("landmarks", total=self.num_frames) as task:
                done = 0
                while True:
                    try:
                        kind, value = self._events.get(timeout=STARVED_WINDOW_S / 4)
                    except queue.Empty:
                        if cpu.starved():
                            log.debug("landmarks in this process: the helper gets too little of the CPU")
                            return None
                        continue
                    if kind == "progress":
                        task.advance(value - done)
                        done = value
                    elif kind == "result":
                        try:
                            return RawTrack.from_bytes(value)
                        except Exception as exc:  # noqa: BLE001 - cut short: detect in this process
                            log.debug("landmarks in this process: the helper's result is unreadable (%s)", exc)
                            return None
                    elif kind == "error" and value.get("type") in _DRIVER_ERRORS:
                        raise _DRIVER_ERRORS[value["type"]](value.get("message", ""))
                    elif kind in ("error", "end"):
                        log.debug("landmarks in this process: the helper failed (%s)", value)
                        return None
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop the child (if it still runs) and reap it; idempotent."""
        proc = self._proc
        if proc.poll() is None:
            proc.kill()
        for pipe in (proc.stdin, proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass
        proc.wait()


#: while :meth:`DriverTrackJob.result` waits, the helper must use at least this share of one core over
#: each window of :data:`STARVED_WINDOW_S` seconds; else the caller detects the driver itself (other
#: processes keep every core busy, and a helper at niceness 19 would get almost none of them)
STARVED_SHARE = 0.25
STARVED_WINDOW_S = 2.0


class _CpuWatch:
    """The CPU time a process (all its threads) used, from ``/proc/PID/stat`` (Linux; elsewhere it
    never calls a process starved)."""

    def __init__(self, pid: int):
        self.path = f"/proc/{pid}/stat"
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.t0, self.cpu0 = time.monotonic(), self.cpu()

    def cpu(self) -> float | None:
        try:
            with open(self.path, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / self.tick  # utime + stime
        except (OSError, IndexError, ValueError):
            return None

    def starved(self) -> bool:
        """Whether the process used less than :data:`STARVED_SHARE` of a core over the last window."""
        now = time.monotonic()
        if now - self.t0 < STARVED_WINDOW_S:
            return False
        cpu = self.cpu()
        starved = cpu is not None and self.cpu0 is not None and cpu - self.cpu0 < STARVED_SHARE * (now - self.t0)
        self.t0, self.cpu0 = now, cpu
        return starved


#: the child's program: this process's import path, then :func:`_child`
_CHILD = ("import json, sys; sys.path[:] = json.loads(sys.argv[1])['sys_path']; "
          f"from {__name__} import _child; sys.exit(_child(sys.argv[1:]))")


class _PipeReporter(Reporter):
    """The child's progress as ``p N`` lines (frames done), at most ten a second."""

    def __init__(self, out):
        self.out = out

    def task(self, description: str, total: int | None = None):
        return _PipeTask(self.out)


class _PipeTask:
    def __init__(self, out):
        self.out, self.done, self.last = out, 0, 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._send()

    def advance(self, n: int = 1, **fields) -> None:
        self.done += n
        if time.monotonic() - self.last >= 0.1:
            self._send()

    def update(self, completed: int | None = None, total: int | None = None, **fields) -> None:
        if completed is not None:
            self.done = completed

    def _send(self) -> None:
        self.out.write(b"p %d\n" % self.done)
        self.out.flush()
        self.last = time.monotonic()


def _exit_when_orphaned() -> None:
    """The parent closed our stdin (it cancelled, or it ended): stop at once."""
    try:
        while sys.stdin.buffer.read(1 << 16):
            pass
    finally:
        os._exit(0)


def _child(argv: Sequence[str]) -> int:
    try:
        os.nice(NICE)
    except (AttributeError, OSError):
        pass
    out = os.fdopen(os.dup(1), "wb")   # the results; fd 1 goes to stderr, so no library's print garbles them
    os.dup2(2, 1)
    threading.Thread(target=_exit_when_orphaned, daemon=True).start()
    detectors: list[Any] = []
    try:
        spec = json.loads(argv[0])
        t0 = time.perf_counter()
        driver = open_driver(spec["driver"], fps=float(spec["fps"]))
        reg = registry(env_plugin_manager(), "landmarks")
        detectors = [reg.create(spec["detector"]) for _ in range(detection_threads())]
        data = detect_driver(driver, detectors, _PipeReporter(out)).to_bytes()
        out.write(b"r %.4f %d\n" % (time.perf_counter() - t0, len(data)))
        out.write(data)
        out.flush()
        return 0
    except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, which decides
        out.write(b"e " + json.dumps({"type": type(exc).__name__, "message": str(exc)}).encode() + b"\n")
        out.flush()
        return 1
    finally:
        for d in detectors:
            close_detector(d)
