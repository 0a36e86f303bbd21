"""headpuppet.media.detection: landmarks over a frame stream on one or several threads, same result."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from headpuppet.media.detection import BLOCK_FRAMES, blocks, detect_frames, ordered_map
from headpuppet.protocols import Face


class _Counting:
    """A stateful detector: the face it reports moves with the frames seen since ``reset``; no face
    on a frame whose first pixel is 0."""

    has_iris = False

    def __init__(self):
        self.seen = 0
        self.threads: set[str] = set()

    def reset(self):
        self.seen = 0

    def detect(self, frame):
        self.threads.add(threading.current_thread().name)
        time.sleep(0.001)
        self.seen += 1
        if frame[0, 0, 0] == 0:
            return []
        t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        ring = np.stack([np.cos(t), np.sin(t)], 1).astype(np.float32)
        centre = np.array([frame[0, 0, 1], self.seen], np.float32)
        return [Face(ring + centre), Face(5 * ring + centre)]  # the larger face is not first


def _frames(n):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        f = rng.integers(1, 255, (4, 4, 3), dtype=np.uint8)
        f[0, 0, 1] = i % 251
        if i in (3, BLOCK_FRAMES):
            f[0, 0, 0] = 0
        out.append(f)
    return out


def test_blocks_and_ordered_map_keep_order():
    assert list(blocks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    slow_first = lambda x: (time.sleep(0.02 if x == 0 else 0), x * x)[1]  # noqa: E731
    assert list(ordered_map(slow_first, range(10), 3)) == [x * x for x in range(10)]
    assert list(ordered_map(slow_first, range(10), 1)) == [x * x for x in range(10)]


def test_ordered_map_raises_the_workers_error():
    def boom(x):
        if x == 4:
            raise ValueError("frame 4")
        return x

    with pytest.raises(ValueError, match="frame 4"):
        list(ordered_map(boom, range(20), 2))


def test_several_detectors_give_one_detectors_faces():
    frames = _frames(2 * BLOCK_FRAMES + 5)
    one = list(detect_frames(frames, [_Counting()]))
    dets = [_Counting() for _ in range(3)]
    many = list(detect_frames(frames, dets))
    assert [f is g for (f, _), (g, _) in zip(one, many)] == [True] * len(frames)  # the frames, in order
    assert [i for i, (_, face) in enumerate(one) if face is None] == [3, BLOCK_FRAMES]
    for (_, a), (_, b) in zip(one, many):
        assert (a is None and b is None) or np.array_equal(a.points, b.points)
    # the largest face, counting from each block's reset
    assert all(np.ptp(p.points[:, 0]) > 9 for _, p in one if p is not None)
    seen = [round(float(p.points[:, 1].mean())) for _, p in one if p is not None]
    expected = [i % BLOCK_FRAMES + 1 for i in range(len(frames)) if i not in (3, BLOCK_FRAMES)]
    assert seen == expected
    assert sum(bool(d.threads) for d in dets) >= 2  # the work was shared


class _WithOneFace(_Counting):
    """A detector that offers ``one_face()``: a copy that reports one face (marked by its size) and
    counts the frames it was given."""

    def __init__(self, faces=1, single=False):
        super().__init__()
        self.faces, self.single, self.calls, self.closed = faces, single, 0, False
        self.made: list["_WithOneFace"] = []

    def one_face(self):
        one = _WithOneFace(single=True)
        self.made.append(one)
        return one

    def close(self):
        self.closed = True

    def detect(self, frame):
        self.calls += 1
        found = super().detect(frame)
        if not found or self.single:
            return found[:1]                     # the small face: tells which detector found it
        return found[1:] if frame[0, 0, 2] % 2 else found  # odd blue: one face, even: two


def test_blocks_that_start_with_one_face_go_on_with_the_one_face_detector():
    frames = _frames(3 * BLOCK_FRAMES)
    frames[BLOCK_FRAMES][0, 0, 0] = 7  # (_frames leaves that frame without a face)
    for i, f in enumerate(frames):  # block 0 and 2 open on one face, block 1 on two
        f[0, 0, 2] = 1 if i in (0, 2 * BLOCK_FRAMES) else (2 if i == BLOCK_FRAMES else f[0, 0, 2])
    dets = [_WithOneFace(), _WithOneFace()]
    out = list(detect_frames(frames, dets))
    small = [face is not None and np.ptp(face.points[:, 0]) < 3 for _, face in out]
    for b in (0, 2):  # first frame from the detector that looks for all faces, the rest from the one-face copy
        block = small[b * BLOCK_FRAMES:(b + 1) * BLOCK_FRAMES]
        assert not block[0] and all(block[i] for i in range(1, BLOCK_FRAMES) if out[b * BLOCK_FRAMES + i][1] is not None)
    assert not any(small[BLOCK_FRAMES:2 * BLOCK_FRAMES])  # opened on two faces: the largest, all block long
    ones = [o for d in dets for o in d.made]
    assert len(ones) == 2 and all(o.closed for o in ones)  # one copy per detector, closed at the end
    assert sum(o.calls for o in ones) == 2 * BLOCK_FRAMES  # started on the first frame too
    # the result still does not depend on the number of detectors
    again = list(detect_frames(frames, [_WithOneFace()]))
    assert all((a is None and b is None) or np.array_equal(a.points, b.points) for (_, a), (_, b) in zip(out, again))


def test_one_face_copies_are_closed_after_the_running_blocks_when_the_reader_stops_early():
    """A reader that stops after a few frames: the pool's running blocks finish before the copies close."""
    events = []

    class Slow(_WithOneFace):
        def one_face(self):
            one = _SlowOne(single=True)
            self.made.append(one)
            return one

    class _SlowOne(_WithOneFace):
        def detect(self, frame):
            time.sleep(0.002)
            events.append("detect-after-close" if self.closed else "detect")
            return super().detect(frame)

        def close(self):
            events.append("close")
            super().close()

    frames = _frames(6 * BLOCK_FRAMES)
    for f in frames:
        f[0, 0, 2] = 1  # one face everywhere
    dets = [Slow(), Slow()]
    gen = detect_frames(frames, dets)
    for _ in range(3):
        next(gen)
    gen.close()
    assert events.count("close") == 2 and "detect-after-close" not in events
    assert events[-2:] == ["close", "close"]


def test_animate_detects_small_drivers_in_longer_blocks(monkeypatch, tmp_path):
    """Pass 1 of animate starts a block (two searches for every face) every 64 frames on long drivers
    whose frames take at most 1 MB, every BLOCK_FRAMES frames on short ones (few blocks share out
    badly between threads) and on larger frames (the blocks in flight hold their frames)."""
    from headpuppet.fewshot import drivertrack, pipeline
    from headpuppet.fewshot.sources import Driver

    small = Driver(tmp_path / "a.mp4", 25.0, 1500, 512, 512)
    large = Driver(tmp_path / "b.mp4", 25.0, 1500, 1920, 1080)
    short = Driver(tmp_path / "c.mp4", 25.0, 183, 512, 512)
    assert drivertrack.driver_block(small) == 64
    assert drivertrack.driver_block(large) == drivertrack.driver_block(short) == BLOCK_FRAMES
    seen = []

    def fake_detect_frames(frames, detectors, block=BLOCK_FRAMES):
        seen.append(block)
        t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
        face = Face(np.stack([200 + 50 * np.cos(t), 200 + 50 * np.sin(t)], 1).astype(np.float32))
        return [(np.zeros((4, 4, 3), np.uint8), face)]

    monkeypatch.setattr(drivertrack, "detect_frames", fake_detect_frames)
    for driver in (small, large):
        pipeline.track_driver(driver, _Counting(), 64)
    assert seen == [64, BLOCK_FRAMES]
