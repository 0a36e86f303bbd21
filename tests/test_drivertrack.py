"""Pass 1 of animate in a helper process (headpuppet.fewshot.drivertrack): the same landmarks as in the
calling process, every failure handed back, and started before torch is imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from headpuppet.errors import MediaError, NoFaceError
from headpuppet.fewshot import drivertrack
from headpuppet.fewshot.drivertrack import DriverTrackJob, RawTrack, detect_driver
from headpuppet.fewshot.sources import open_driver
from headpuppet.media.video import VideoWriter, read_frames
from headpuppet.progress import Reporter
from headpuppet.plugins import make_plugin_manager
from headpuppet.testing import CentreDetector, FakeDetectorPlugin, mediapipe_or_skip

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def short_driver(shared_video, tmp_path) -> Path:
    """The first 40 frames of a shared face video."""
    path = tmp_path / "driver.mp4"
    with VideoWriter(path, 25) as w:
        for frame in read_frames(shared_video, max_frames=40):
            w.write(frame)
    return path


class _Bars(Reporter):
    def __init__(self):
        self.bars: dict[str, list] = {}

    def task(self, description, total=None):
        reporter = self

        class _T:
            def __enter__(self):
                reporter.bars[description] = [0, total]
                return self

            def __exit__(self, *exc):
                return False

            def advance(self, n=1, **fields):
                reporter.bars[description][0] += n

            def update(self, completed=None, total=None, **fields):
                pass

        return _T()


def _same(a: RawTrack, b: RawTrack) -> None:
    assert a.hw == b.hw
    np.testing.assert_array_equal(a.found, b.found)
    np.testing.assert_array_equal(a.points, b.points)  # bit for bit (NaN where no face)
    assert (a.iris is None) == (b.iris is None)
    if a.iris is not None:
        np.testing.assert_array_equal(a.iris, b.iris)


def test_the_helper_finds_the_landmarks_of_the_calling_process(short_driver, pm):
    mediapipe_or_skip(pm)
    driver = open_driver(short_driver)
    job = DriverTrackJob.start(driver, None, pm=pm)
    assert job is not None and job.detector == "mediapipe"
    bars = _Bars()
    got = job.result("mediapipe", bars)
    assert job._proc.returncode is not None  # reaped
    assert bars.bars["landmarks"] == [40, 40]
    assert job.seconds is not None and job.seconds > 0
    dets = [mediapipe_or_skip(pm) for _ in range(2)]
    try:
        here = detect_driver(driver, dets)
    finally:
        for d in dets:
            d.close()
    assert got.found.all() and got.iris is not None
    _same(got, here)
    _same(RawTrack.from_bytes(got.to_bytes()), got)


def test_only_the_projects_own_detectors_run_in_the_helper(short_driver, monkeypatch):
    """The child makes its own plugin manager: a third party's detector (or one a caller registered
    by hand) might not be there, so the calling process detects with it; the helper can be turned off."""
    driver = open_driver(short_driver)
    pm = make_plugin_manager(extra_plugins=[("someone-elses", FakeDetectorPlugin(centre=CentreDetector))])
    assert DriverTrackJob.start(driver, "centre", pm=pm) is None
    assert DriverTrackJob.start(driver, "no-such-detector", pm=pm) is None
    monkeypatch.setenv(drivertrack.HELPER_ENV, "off")
    assert DriverTrackJob.start(driver, None, pm=pm) is None


def test_the_helper_stops_when_the_model_wants_another_detector(short_driver, pm):
    mediapipe_or_skip(pm)
    job = DriverTrackJob.start(open_driver(short_driver), "mediapipe", pm=pm)
    assert job.result("face-alignment") is None
    assert job._proc.returncode is not None


def test_a_driver_without_a_face_fails_in_the_helper_as_in_the_calling_process(tmp_path, pm):
    det = mediapipe_or_skip(pm)
    path = tmp_path / "dark.mp4"
    with VideoWriter(path, 25) as w:
        for _ in range(6):
            w.write(np.zeros((64, 64, 3), np.uint8))
    driver = open_driver(path)
    with pytest.raises(NoFaceError) as here:
        detect_driver(driver, det)
    det.close()
    job = DriverTrackJob.start(driver, None, pm=pm)
    with pytest.raises(NoFaceError) as there:
        job.result("mediapipe")
    assert str(there.value) == str(here.value)


def _job(code: str, frames: int = 10) -> DriverTrackJob:
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    return DriverTrackJob(proc, "mediapipe", frames)


def test_a_helper_that_fails_hands_the_pass_back():
    """A crash, a result cut short or any error that is not the driver's: None (the caller detects
    the driver itself, and reports its own errors); a driver's error is raised as it is."""
    assert _job("import sys; sys.stdout.write('p 3\\n'); sys.exit(3)").result("mediapipe") is None
    assert _job("import sys; sys.stdout.write('r 1.0 100\\nshort'); sys.exit(0)").result("mediapipe") is None
    error = json.dumps({"type": "RuntimeError", "message": "the graph broke"})
    assert _job(f"print('e ' + {error!r})").result("mediapipe") is None
    error = json.dumps({"type": "MediaError", "message": "x.mp4: cannot decode the video"})
    with pytest.raises(MediaError, match="cannot decode"):
        _job(f"print('e ' + {error!r})").result("mediapipe")


def test_a_helper_that_gets_no_cpu_hands_the_pass_back(monkeypatch):
    """All cores busy with other processes: a helper at niceness 19 would get almost none of them
    while animate waits, so after a window in which it used under a quarter of a core the caller
    detects the driver itself (a sleeping child stands in for a starved one)."""
    monkeypatch.setattr(drivertrack, "STARVED_WINDOW_S", 0.3)
    job = _job("import time; time.sleep(60)")
    assert job.result("mediapipe") is None
    assert job._proc.returncode is not None  # killed and reaped


def test_the_helper_ends_when_its_parent_closes_its_stdin(short_driver, pm):
    """What a parent that ends (or cancels) does to the child: it stops at once, without a result."""
    mediapipe_or_skip(pm)
    job = DriverTrackJob.start(open_driver(short_driver), None, pm=pm)
    job._proc.stdin.close()
    assert job._proc.wait(timeout=60) == 0
    job._reader.join(timeout=60)
    kinds = []
    while not job._events.empty():
        kinds.append(job._events.get()[0])
    assert "result" not in kinds and kinds[-1] == "end"
    job.cancel()


def test_animate_starts_the_helper_before_torch_is_imported(shared_photo, short_driver, tmp_path):
    """The helper's point is to run while torch imports: headpuppet.animate must start it first."""
    code = f"""
import sys
from headpuppet.errors import CheckpointError
from headpuppet.fewshot import drivertrack
start = drivertrack.DriverTrackJob.start
def spy(*a, **k):
    job = start(*a, **k)
    print("helper started:", job is not None, "torch loaded:", "torch" in sys.modules)
    return job
drivertrack.DriverTrackJob.start = spy
import headpuppet
try:
    headpuppet.animate({str(shared_photo)!r}, {str(short_driver)!r}, {str(tmp_path / 'o.mp4')!r},
                       checkpoint={str(tmp_path / 'nothing')!r})
except CheckpointError as exc:
    print("failed as expected:", exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120).stdout
    assert "helper started: True torch loaded: False" in out and "failed as expected: no checkpoint" in out


def test_animate_with_and_without_the_helper_writes_the_same_video(shared_photo, short_driver, tmp_path,
                                                                    monkeypatch):
    import headpuppet

    with_helper = headpuppet.animate(shared_photo, short_driver, tmp_path / "a.mp4", finetune_steps=0)
    monkeypatch.setenv(drivertrack.HELPER_ENV, "off")
    without = headpuppet.animate(shared_photo, short_driver, tmp_path / "b.mp4", finetune_steps=0)
    assert "landmarks_helper" in with_helper.timings and "landmarks_helper" not in without.timings
    a = np.stack(list(read_frames(tmp_path / "a.mp4")))
    b = np.stack(list(read_frames(tmp_path / "b.mp4")))
    assert a.shape[0] == 40
    np.testing.assert_array_equal(a, b)
