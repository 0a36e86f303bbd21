"""Landmarks over a stream of frames, on one detector or several threads, with the same result.

Detection runs on blocks of :data:`BLOCK_FRAMES` consecutive frames, each block starting from a
fresh detector state (``reset()``: a tracking detector finds the face anew, as after a cut). Blocks
are therefore independent: given several detectors, threads work on different blocks of the same
video at once and the faces are the same, frame for frame, as with one detector. Detectors that
release the GIL while they run (MediaPipe's graph, torch) scale with the threads. Used by
``headpuppet preprocess`` (pass 1 of each video) and ``headpuppet animate`` (the driver's landmarks).
"""

from __future__ import annotations

import itertools
import os
import queue
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..protocols import Face, largest_face

__all__ = ["BLOCK_FRAMES", "blocks", "ordered_map", "detect_frames", "detection_threads", "close_detector"]

#: frames per detection block; each block starts from a reset detector
BLOCK_FRAMES = 32


def detection_threads(limit: int = 4) -> int:
    """How many detector threads pay on this machine: the CPUs this process may use, at most ``limit``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, limit))


def close_detector(det) -> None:
    """``det.close()`` where the detector has one; best effort (a failure to close is not the error
    worth reporting, and it runs in ``finally`` blocks where it would hide the one that is)."""
    close = getattr(det, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def blocks(items: Iterable[Any], n: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``n`` (the last one shorter)."""
    it = iter(items)
    while block := list(itertools.islice(it, n)):
        yield block


def ordered_map(fn: Callable[[Any], Any], items: Iterable[Any], threads: int) -> Iterator[Any]:
    """``map(fn, items)`` on ``threads`` threads, in order, with at most ``2 * threads`` items in flight
    (``items``, e.g. a decoder, is drawn on the calling thread)."""
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads, thread_name_prefix="hp-detect") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) >= 2 * threads:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def detect_frames(frames: Iterable[np.ndarray], detectors: Sequence[Any],
                  block: int = BLOCK_FRAMES) -> Iterator[tuple[np.ndarray, Face | None]]:
    """``(frame, its largest face or None)`` for every frame, in order, with one thread per detector.

    Each block of ``block`` frames runs on whichever detector is free, reset first (see the module
    docstring), so the result does not depend on the number of detectors. Where a detector offers
    ``one_face()`` (:class:`headpuppet.protocols.LandmarkDetector`) and a block's first frame shows
    exactly one face, the rest of the block goes to that one-face detector, reset and started on
    the same first frame: a tracker that looks for one face only is cheaper. A block that starts
    with several faces (or none) stays on the detector that looks for all of them. The one-face
    copies are closed at the end, once no block is running on them."""
    free: queue.SimpleQueue = queue.SimpleQueue()
    singles = []
    for d in detectors:
        one = d.one_face() if callable(getattr(d, "one_face", None)) else None
        singles += [one] if one is not None else []
        free.put((d, one))

    def detect_block(frames_: list[np.ndarray]) -> tuple[list[np.ndarray], list[Face | None]]:
        det, one = free.get()
        try:
            if hasattr(det, "reset"):
                det.reset()
            first = det.detect(frames_[0])
            rest = det
            if one is not None and len(first) == 1 and len(frames_) > 1:
                if hasattr(one, "reset"):
                    one.reset()
                one.detect(frames_[0])  # its track starts where the other's did: the same landmarks after
                rest = one
            return frames_, [largest_face(first)] + [largest_face(faces) if (faces := rest.detect(f)) else None
                                                     for f in frames_[1:]]
        finally:
            free.put((det, one))

    results = ordered_map(detect_block, blocks(frames, block), len(detectors))
    try:
        for frames_, faces in results:
            yield from zip(frames_, faces)
    finally:
        results.close()  # waits for the blocks still running (the pool shuts down) before closing
        for one in singles:
            close_detector(one)
