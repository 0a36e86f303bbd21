"""The live run: :func:`run_live` ties a :class:`~.capture.FrameSource` (reader thread), a detection
thread (:meth:`~.pipeline.LiveAnimator.track`, one frame ahead) and rendering in the caller's thread
(:meth:`~.pipeline.LiveAnimator.render`) to the sinks, and records a :class:`~.stats.LiveStats`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable

from ..errors import HeadpuppetError, MediaError
from .capture import FrameSource
from .pipeline import LiveAnimator
from .sinks import StreamClosed
from .stats import LiveStats


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
