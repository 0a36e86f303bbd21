"""headpuppet preprocess: discovery, ids, the dataset format, resume, failures, shards, plugins, CLI."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from headpuppet.cli import build_app
from headpuppet.data import format as fmt
from headpuppet.data.format import DatasetError, open_dataset
from headpuppet.data.preprocess import assign_ids, discover, preprocess, shard_items
from headpuppet.errors import HeadpuppetError
from headpuppet.media.imaging import write_image
from headpuppet.plugins import make_plugin_manager
from headpuppet.testing import CentreDetector, FakeDetectorPlugin, strip_ansi

ROOT = Path(__file__).resolve().parents[1]

EXAMPLE_DIR = ROOT / "examples" / "headpuppet-example-detector"


@pytest.fixture
def fake_pm():
    """Only the fast fake detector ``centre`` (a ring of points mid-frame, with irises)."""
    return make_plugin_manager(load_entrypoints=False,
                               extra_plugins=[("fake", FakeDetectorPlugin(centre=CentreDetector))])


def _frames_dir(path: Path, n: int, dark: tuple[int, ...] = (), size: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(40, 255, size=(size, size + 8, 3), dtype=np.uint8)
        if i in dark:
            img[:] = 0
        write_image(path / f"{i:04d}.png", img)
    return path


def _invoke(pm, *args):
    res = CliRunner().invoke(build_app(pm), ["preprocess", *map(str, args)])
    return res, strip_ansi(res.output)


# ---------------------------------------------------------------------------- discovery and ids


def test_discovery_ids_and_persons(tmp_path):
    root = tmp_path / "vox"
    for rel in ("id00012/abc/00001.mp4", "id00012/abc/00002.mp4", "id00099/xyz/00001.mp4"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    _frames_dir(root / "id00123" / "clipdir", 2)
    (root / "loose.mp4").write_bytes(b"")
    (root / ".hidden").mkdir()
    (root / "README.txt").write_text("x")
    other = tmp_path / "other"
    other.mkdir()
    (other / "loose.mp4").write_bytes(b"")  # same id as vox/loose.mp4
    items = assign_ids(discover([root, other / "loose.mp4", tmp_path / "missing.mp4"]))
    by = {it.id: it for it in items}
    assert by["id00012_abc_00001"].person == "id00012"
    assert by["id00099_xyz_00001"].kind == "video"
    assert by["id00123_clipdir"].kind == "frames" and by["id00123_clipdir"].person == "id00123"
    loose = [it for it in items if it.rel == "loose"]
    assert len({it.id for it in loose}) == 2 and {it.person for it in loose} == {"loose"}
    errors = {it.source.name: it.reason for it in items if it.kind == "error"}
    assert set(errors) == {"README.txt", "missing.mp4"}
    assert "no such" in errors["missing.mp4"] and "not a video" in errors["README.txt"]
    assert len({it.id for it in items}) == len(items)
    # deterministic: the same inputs in another order give the same ids
    again = assign_ids(discover([tmp_path / "missing.mp4", other / "loose.mp4", root]))
    assert [(it.id, it.source) for it in again] == [(it.id, it.source) for it in items]


def test_shards_are_disjoint_and_cover_everything(tmp_path):
    for i in range(11):
        (tmp_path / f"p{i % 3}" / f"v{i}.mp4").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f"p{i % 3}" / f"v{i}.mp4").write_bytes(b"")
    items = assign_ids(discover([tmp_path]))
    for n in (1, 2, 3, 5):
        parts = [shard_items(items, (i, n)) for i in range(n)]
        ids = [it.id for part in parts for it in part]
        assert sorted(ids) == sorted(it.id for it in items)  # covers, and no id twice
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(HeadpuppetError):
        shard_items(items, (3, 3))


# ------------------------------------------------------------------------- library, fake detector


def test_preprocess_writes_the_documented_format(tmp_path, fake_pm):
    src = _frames_dir(tmp_path / "in" / "alice" / "clip1", 6, dark=(2,))
    _frames_dir(tmp_path / "in" / "bob" / "clip9", 3, dark=(0, 1, 2))  # no face at all
    out = tmp_path / "ds"
    s = preprocess([tmp_path / "in"], out, size=32, every=1, detector="centre", pm=fake_pm)
    assert [r.id for r in s.done] == ["alice_clip1"]
    assert [(r.id, r.reason) for r in s.failed] == [("bob_clip9", "no face found in any of its 3 frames")]
    assert (s.frames_kept, s.frames_no_face) == (5, 1 + 3)  # bob's faceless frames count as dropped too
    info = json.loads((out / "dataset.json").read_text())
    assert info == {"format": "headpuppet-dataset", "version": 1, "size": 32, "detector": "centre", "has_iris": True}
    ds = open_dataset(out)
    assert (ds.size, ds.has_iris, ds.detector, len(ds.videos)) == (32, True, "centre", 1)
    v = ds.videos[0]
    assert (v.id, v.person, v.num_frames, v.fps) == ("alice_clip1", "alice", 5, None)
    assert v.frame_indices == [0, 1, 3, 4, 5]
    assert v.source == str(src)
    assert v.landmarks.shape == (5, 68, 2) and v.landmarks.dtype == np.float32
    assert v.iris.shape == (5, 2, 3)
    assert v.frame(0).shape == (32, 32, 3) and v.frame(4).dtype == np.uint8
    assert sorted(p.name for p in (v.path / "frames").iterdir()) == [f"{i:06d}.jpg" for i in range(5)]
    # landmarks are the largest face's, in crop pixels: the ring centred in the crop, inside it
    from headpuppet.media.crop import CropBox, from_crop

    box = CropBox.from_list(v.crop)
    back = from_crop(v.landmarks[0], box, 32)
    assert np.allclose(back.mean(0), [28, 24], atol=0.5)  # frame is 56 x 48: centre (28, 24)
    assert (v.landmarks > 0).all() and (v.landmarks < 32).all()
    assert not any(p.name.startswith(".tmp-") for p in (out / "videos").iterdir())


def test_every_and_max_frames(tmp_path, fake_pm):
    _frames_dir(tmp_path / "clip", 10)
    s = preprocess([tmp_path / "clip"], tmp_path / "ds", size=16, every=3, max_frames=3, detector="centre",
                   pm=fake_pm)
    assert s.frames_kept == 3
    assert open_dataset(tmp_path / "ds").videos[0].frame_indices == [0, 3, 6]


def test_long_videos_are_decoded_twice_with_the_same_result(tmp_path, fake_pm, monkeypatch):
    import headpuppet.data.extract as pre

    _frames_dir(tmp_path / "clip", 5, dark=(1,))
    preprocess([tmp_path / "clip"], tmp_path / "held", size=16, detector="centre", pm=fake_pm)
    monkeypatch.setattr(pre, "KEEP_FRAMES_BYTES", 1)  # too long to hold: the crop pass decodes again
    preprocess([tmp_path / "clip"], tmp_path / "again", size=16, detector="centre", pm=fake_pm)
    a, b = open_dataset(tmp_path / "held").videos[0], open_dataset(tmp_path / "again").videos[0]
    assert a.frame_indices == b.frame_indices == [0, 2, 3, 4]
    assert np.array_equal(a.frames(range(4)), b.frames(range(4)))
    assert np.array_equal(a.landmarks, b.landmarks)


def test_resume_after_an_interrupted_run(tmp_path, fake_pm, monkeypatch):
    for name in ("a", "b", "c"):
        _frames_dir(tmp_path / "in" / name, 3)
    out = tmp_path / "ds"
    real_finish = fmt.PendingVideo.finish
    calls = []

    def dying_finish(self, *args, **kwargs):
        calls.append(self.id)
        if self.id == "b":
            raise KeyboardInterrupt  # the job is killed while writing b
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(fmt.PendingVideo, "finish", dying_finish)
    monkeypatch.setattr(fmt.PendingVideo, "abort", lambda self: None)  # a kill cleans nothing up
    with pytest.raises(KeyboardInterrupt):
        preprocess([tmp_path / "in"], out, size=16, detector="centre", pm=fake_pm)
    monkeypatch.undo()
    assert calls == ["a", "b"]
    leftovers = [p.name for p in (out / "videos").iterdir() if p.name.startswith(".tmp-b-")]
    assert len(leftovers) == 1
    assert [v.id for v in open_dataset(out).videos] == ["a"]  # b's half-written folder is not listed
    stale = out / "videos" / ".tmp-c-99999999"  # another killed run's leftover
    (stale / "frames").mkdir(parents=True)

    s = preprocess([tmp_path / "in"], out, size=16, detector="centre", pm=fake_pm)
    assert [r.id for r in s.skipped] == ["a"]
    assert sorted(r.id for r in s.done) == ["b", "c"]
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["a", "b", "c"]
    assert [v.num_frames for v in open_dataset(out).videos] == [3, 3, 3]


def test_dataset_settings_must_match_on_rerun(tmp_path, fake_pm):
    _frames_dir(tmp_path / "clip", 2)
    preprocess([tmp_path / "clip"], tmp_path / "ds", size=16, detector="centre", pm=fake_pm)
    with pytest.raises(DatasetError, match="--size 16"):
        preprocess([tmp_path / "clip"], tmp_path / "ds", size=32, detector="centre", pm=fake_pm)
    (tmp_path / "notds").mkdir()
    (tmp_path / "notds" / "thing.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        preprocess([tmp_path / "clip"], tmp_path / "notds", size=16, detector="centre", pm=fake_pm)


def test_open_dataset_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        open_dataset(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="not a headpuppet dataset"):
        open_dataset(tmp_path)
    fmt.write_dataset_json(tmp_path / "ds", 64, "centre", False)
    with pytest.raises(DatasetError, match="no complete videos"):
        open_dataset(tmp_path / "ds")
    assert open_dataset(tmp_path / "ds", require_videos=False).videos == []
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps({"format": "headpuppet-dataset", "version": 99}))
    with pytest.raises(DatasetError, match="newer"):
        open_dataset(tmp_path / "ds")
    for err in (DatasetError,):
        assert issubclass(err, HeadpuppetError)


def test_workers_in_processes(tmp_path, fake_pm):
    for name in ("a", "b", "c"):
        _frames_dir(tmp_path / "in" / name, 2, seed=ord(name))
    (tmp_path / "in" / "bad.mp4").write_text("not a video")
    s = preprocess([tmp_path / "in"], tmp_path / "ds", size=16, detector="centre", workers=2, pm=fake_pm)
    assert sorted(r.id for r in s.done) == ["a", "b", "c"]
    assert [r.id for r in s.failed] == ["bad"] and "not a readable video" in s.failed[0].reason
    assert s.frames_kept == 6


class _Tracker(CentreDetector):
    """A stateful detector: its ring moves with the frames seen since its last ``reset`` (as a
    tracker's output depends on its history); records the threads it ran on."""

    threads: set = set()

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen = 0

    def reset(self) -> None:
        super().reset()
        self.seen = 0

    def detect(self, frame):
        faces = super().detect(frame)
        _Tracker.threads.add(threading.current_thread().name)
        time.sleep(0.002)  # let the other threads in
        for f in faces:
            f.points = f.points + self.seen
        self.seen += 1
        return faces


def test_workers_share_one_videos_frames_with_the_same_result(tmp_path):
    """Fewer videos than workers: threads detect on blocks of the same video; every block starts
    from a reset detector, so the landmarks equal one worker's, frame for frame."""
    from headpuppet.media.detection import BLOCK_FRAMES

    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[("fake", FakeDetectorPlugin(track=_Tracker))])
    n = 2 * BLOCK_FRAMES + 7
    _frames_dir(tmp_path / "in" / "v", n, dark=(5,), size=24)
    lms = []
    for workers in (1, 3):
        _Tracker.threads = set()
        s = preprocess([tmp_path / "in"], tmp_path / f"ds{workers}", size=16, detector="track", workers=workers, pm=pm)
        assert [r.frames_kept for r in s.done] == [n - 1] and s.frames_no_face == 1
        assert len(_Tracker.threads) == (1 if workers == 1 else 3)
        ds = open_dataset(tmp_path / f"ds{workers}")
        lms.append(ds.videos[0].landmarks)
        meta = json.loads((tmp_path / f"ds{workers}" / "videos" / "v" / "meta.json").read_text())
        assert meta["frame_indices"] == [i for i in range(n) if i != 5]
    np.testing.assert_array_equal(lms[0], lms[1])
    # the offset restarts at every block: frame BLOCK_FRAMES is the first of the second block
    offsets = np.array([i % BLOCK_FRAMES for i in range(n) if i != 5], dtype=np.float32)
    scale = 16 / json.loads((tmp_path / "ds1" / "videos" / "v" / "meta.json").read_text())["crop"][2]
    np.testing.assert_allclose(lms[0][:, 0, 0] - lms[0][0, 0, 0], offsets * scale, atol=1e-3)
    for a, b in zip(sorted((tmp_path / "ds1" / "videos" / "v" / "frames").iterdir()),
                    sorted((tmp_path / "ds3" / "videos" / "v" / "frames").iterdir())):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()


# ----------------------------------------------------------------------------------------- CLI


def test_cli_shared_video_and_astronaut_frames_with_mediapipe(tmp_path, shared_video, astronaut):
    import cv2

    frames = tmp_path / "astro"
    frames.mkdir()
    for i, dx in enumerate((0, 4, 8)):  # the face moves a little between frames
        img = cv2.resize(np.roll(astronaut, dx, axis=1), (256, 256), interpolation=cv2.INTER_AREA)
        write_image(frames / f"{i}.jpg", img)
    out = tmp_path / "ds"
    res, text = _invoke(make_plugin_manager(), shared_video, frames, "--out", out, "--max-frames", 8,
                        "--size", 64, "--preview")
    assert res.exit_code == 0, text
    assert "videos done" in text and "frames kept" in text
    ds = open_dataset(out)
    assert (ds.size, ds.detector, ds.has_iris) == (64, "mediapipe", True)
    by = {v.id: v for v in ds.videos}
    assert set(by) == {"dtk_m030_neutral", "astro"}
    v = by["dtk_m030_neutral"]
    assert v.num_frames == 8 and v.fps == pytest.approx(25.0) and v.frame_indices == list(range(8))
    lm = v.landmarks
    assert lm.shape == (8, 68, 2) and np.isfinite(lm).all()
    # the face sits in the middle of the crop and fills a good part of it
    assert 20 < lm[..., 0].mean() < 44 and 20 < lm[..., 1].mean() < 50
    assert 20 < (lm[0, :, 0].max() - lm[0, :, 0].min()) < 50
    assert by["astro"].num_frames == 3 and by["astro"].iris.shape == (3, 2, 3)
    assert (out / "preview.png").is_file()
    # running again skips both
    res, text = _invoke(make_plugin_manager(), shared_video, frames, "--out", out, "--max-frames", 8, "--size", 64)
    assert res.exit_code == 0, text
    row = next(line for line in text.splitlines() if "skipped (already done)" in line)
    assert row.split()[-1] == "2"


def test_cli_bad_inputs_give_reasons_and_exit_code(tmp_path, fake_pm):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    (folder / "empty").mkdir()
    res, text = _invoke(fake_pm, folder, tmp_path / "missing.mp4", "--out", tmp_path / "ds", "--detector", "centre")
    assert res.exit_code == 1
    assert "not a video" in text and "empty folder" in text and "no such file or folder" in text
    assert "nothing could be processed" in text
    assert "Traceback" not in text
    # with one good input among them, the batch succeeds and still lists the failures
    _frames_dir(folder / "good", 2)
    res, text = _invoke(fake_pm, folder, tmp_path / "missing.mp4", "--out", tmp_path / "ds", "--detector", "centre")
    assert res.exit_code == 0, text
    assert "empty folder" in text and "no such file or folder" in text
    assert [v.id for v in open_dataset(tmp_path / "ds").videos] == ["good"]


@pytest.mark.parametrize("args, needle", [
    (["--shard", "2/2"], "0 <= I < N"),
    (["--shard", "x"], "is not I/N"),
    (["--size", "0"], "too small"),
    (["--every", "0"], "at least 1"),
])
def test_cli_bad_options(tmp_path, fake_pm, args, needle):
    res, text = _invoke(fake_pm, tmp_path, "--out", tmp_path / "ds", *args)
    assert res.exit_code == 2
    assert needle in text
    assert not (tmp_path / "ds").exists()


def test_cli_unknown_detector_is_one_line(tmp_path, fake_pm):
    _frames_dir(tmp_path / "clip", 1)
    res, text = _invoke(fake_pm, tmp_path / "clip", "--out", tmp_path / "ds", "--detector", "nope")
    assert res.exit_code == 1
    assert "unknown landmarks 'nope'" in text and "centre" in text and "Traceback" not in text


def test_cli_shards_split_the_work(tmp_path, fake_pm):
    for i in range(5):
        _frames_dir(tmp_path / "in" / f"v{i}", 1, seed=i)
    seen = []
    for shard in ("0/2", "1/2"):
        res, text = _invoke(fake_pm, tmp_path / "in", "--out", tmp_path / "ds", "--detector", "centre",
                            "--size", 16, "--shard", shard)
        assert res.exit_code == 0, text
        ids = [v.id for v in open_dataset(tmp_path / "ds").videos]
        seen.append(set(ids) - set().union(*seen) if seen else set(ids))
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == {f"v{i}" for i in range(5)}


def test_cli_third_party_detector_by_name(tmp_path, astronaut, monkeypatch):
    if not (EXAMPLE_DIR / "headpuppet_example_detector.py").exists():
        pytest.skip(f"example plugin not found at {EXAMPLE_DIR}")
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    import importlib

    module = importlib.import_module("headpuppet_example_detector")
    pm = make_plugin_manager(extra_plugins=[("example", module)])
    frames = tmp_path / "astro"
    frames.mkdir()
    write_image(frames / "0.png", astronaut[:256, 64:320])
    write_image(frames / "1.png", np.zeros((256, 256, 3), np.uint8))  # no face: dropped
    res, text = _invoke(pm, frames, "--out", tmp_path / "ds", "--detector", "example", "--size", 32)
    assert res.exit_code == 0, text
    ds = open_dataset(tmp_path / "ds")
    assert (ds.detector, ds.has_iris) == ("example", False)
    v = ds.videos[0]
    assert v.num_frames == 1 and v.iris is None and not (v.path / "iris.npy").exists()
    assert "frames dropped (no face)" in text


def test_worker_processes_send_native_stderr_to_devnull():
    """In a preprocess worker, what native code writes to fd 2 is dropped while Python's stderr still
    reaches the terminal; HEADPUPPET_NATIVE_LOGS (set by -vv) keeps both, and so does the command
    line's stderr filter (its marker inherited), which drops only native log lines."""
    import subprocess
    import sys

    from headpuppet.nativelog import FILTER_ENV

    code = ("import os, sys; from headpuppet.data.workers import _native_stderr_to_devnull; "
            "_native_stderr_to_devnull(); os.write(2, b'native\\n'); print('python', file=sys.stderr)")
    env = {k: v for k, v in os.environ.items() if k not in ("HEADPUPPET_NATIVE_LOGS", FILTER_ENV)}
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "python" in quiet.stderr and "native" not in quiet.stderr
    for extra in ({"HEADPUPPET_NATIVE_LOGS": "1"}, {FILTER_ENV: "12345"}):
        loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**env, **extra}, check=True)
        assert "python" in loud.stderr and "native" in loud.stderr
