"""``headpuppet animate`` end to end through the CLI on a tiny random checkpoint (real faces, real
mediapipe landmarks, real ffmpeg): frame count, fps and audio of the driver are kept; bad input is
one line and leaves no output file."""

from __future__ import annotations

import logging
import re
import subprocess

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headpuppet.testing import make_checkpoint, make_pm, mediapipe_or_skip, shared_file, strip_ansi

N_FRAMES = 10


def _ffmpeg(*args) -> None:
    from headpuppet.media.video import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A short driver with audio (a shared face video + a sine), a black driver and a source photo."""
    root = tmp_path_factory.mktemp("media")
    video = shared_file("videos/dtk_m030_happy.mp4")
    silent = root / "silent.mp4"
    _ffmpeg("-i", video, "-frames:v", N_FRAMES, "-c:v", "libx264", "-pix_fmt", "yuv420p", silent)
    # audio longer than the picture (1 s vs 0.4 s), as when a clip is cut from a longer recording
    driver = root / "driver.mp4"
    _ffmpeg("-i", silent, "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-map", "0:v:0", "-map", "1:a:0",
            "-c:v", "copy", "-c:a", "aac", driver)
    black = root / "black.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=black:size=64x64:rate=25", "-frames:v", 5, "-c:v", "libx264",
            "-pix_fmt", "yuv420p", black)
    from skimage import data

    from headpuppet.media.imaging import write_image

    photo = root / "astronaut.png"
    write_image(photo, data.astronaut())
    blank = root / "blank.png"
    write_image(blank, np.full((80, 80, 3), 128, np.uint8))
    return {"driver": driver, "black": black, "photo": photo, "blank": blank, "root": root}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture
def run():
    from headpuppet.cli import build_app

    torch.set_num_threads(1)
    pm = make_pm()
    mediapipe_or_skip(pm)
    app = build_app(pm)
    runner = CliRunner()

    def invoke(*args):
        res = runner.invoke(app, [str(a) for a in args])
        res.text = strip_ansi(res.output)  # stdout and stderr together
        return res

    return invoke


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_animate_keeps_frames_fps_and_audio(run, media, ckpt, tmp_path):
    from headpuppet.media.video import probe

    drv = probe(media["driver"])
    assert drv.has_audio and drv.num_frames == N_FRAMES
    out = tmp_path / "out.mp4"
    try:
        res = run("-v", "animate", media["photo"], media["driver"], "-o", out, "--checkpoint", ckpt,
                  "--device", "cpu", "--batch-size", 4)
    finally:
        logging.getLogger().setLevel(logging.WARNING)  # -v set INFO for the process
    assert res.exit_code == 0, res.text
    info = probe(out)
    assert info.num_frames == N_FRAMES and info.fps == pytest.approx(drv.fps)
    assert info.has_audio
    assert (info.width, info.height) == (32, 32)
    assert f"{N_FRAMES} frames" in res.text and "audio" in res.text
    # -v says where the time went (bench/animate_e2e.py reads this line)
    timings = re.search(r"timings \(s\): (.*)", res.text).group(1).split()
    assert {t.split("=")[0] for t in timings} >= {"person", "landmarks", "render", "finish"}
    assert _leftovers(tmp_path) == []


def test_side_by_side_doubles_the_width_and_absolute_mode(run, media, ckpt, tmp_path):
    from headpuppet.media.video import probe

    out = tmp_path / "sbs.mp4"
    res = run("animate", media["photo"], media["driver"], "-o", out, "-c", ckpt, "--device", "cpu",
              "--side-by-side", "--absolute", "--no-smooth")
    assert res.exit_code == 0, res.text
    info = probe(out)
    assert (info.width, info.height) == (64, 32) and info.num_frames == N_FRAMES


def test_paste_back_writes_the_full_photo(run, media, ckpt, tmp_path):
    from headpuppet.media.video import probe

    out = tmp_path / "paste.mp4"
    res = run("animate", media["photo"], media["driver"], "-o", out, "-c", ckpt, "--device", "cpu", "--paste-back")
    assert res.exit_code == 0, res.text
    info = probe(out)
    assert (info.width, info.height) == (512, 512)


def test_default_output_name(run, media, ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = run("animate", media["photo"], media["driver"], "-c", ckpt, "--device", "cpu")
    assert res.exit_code == 0, res.text
    assert (tmp_path / "astronaut_driver.mp4").exists()


def test_driver_without_a_face_fails_and_leaves_no_output(run, media, ckpt, tmp_path):
    out = tmp_path / "none.mp4"
    res = run("animate", media["photo"], media["black"], "-o", out, "-c", ckpt, "--device", "cpu")
    assert res.exit_code != 0
    assert "no face found in any frame of the driver" in res.text
    assert "Traceback" not in res.text
    assert not out.exists() and _leftovers(tmp_path) == []


def test_source_without_a_face_fails(run, media, ckpt, tmp_path):
    out = tmp_path / "x.mp4"
    res = run("animate", media["blank"], media["driver"], "-o", out, "-c", ckpt, "--device", "cpu")
    assert res.exit_code != 0 and "no face found in the source blank.png" in res.text
    assert not out.exists()


def test_unwritable_output_fails_before_any_work(run, media, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    # the checkpoint does not exist either: the output is checked first, so that is what is reported
    res = run("animate", media["photo"], media["driver"], "-o", blocker / "out.mp4", "-c", tmp_path / "nope")
    assert res.exit_code != 0
    lines = [ln for ln in res.text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot write" in lines[0], res.text
    res = run("animate", media["photo"], media["driver"], "-o", tmp_path, "-c", tmp_path / "nope")
    assert res.exit_code != 0 and "is a folder" in res.text


def test_missing_checkpoint_and_unreadable_files(run, media, tmp_path):
    out = tmp_path / "o.mp4"
    res = run("animate", media["photo"], media["driver"], "-o", out, "-c", tmp_path / "nope")
    assert res.exit_code != 0 and "no checkpoint at" in res.text
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not a jpeg")
    res = run("animate", broken, media["driver"], "-o", out, "-c", tmp_path / "nope")
    assert res.exit_code != 0 and "broken.jpg" in res.text and "Traceback" not in res.text
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"\x00" * 100)
    res = run("animate", media["photo"], bad_video, "-o", out, "-c", tmp_path / "nope")
    assert res.exit_code != 0 and "bad.mp4" in res.text and "Traceback" not in res.text
    res = run("animate", media["photo"], "-o", out)
    assert res.exit_code != 0 and "SOURCE" in res.text
    res = run("animate", media["photo"], media["driver"], "-o", out, "--device", "tpu")
    assert res.exit_code != 0 and "--device must be cpu or cuda" in res.text
    assert not out.exists()


def test_demo_checkpoint_missing_is_one_line(run, media, tmp_path, monkeypatch):
    import headpuppet.fewshot.animator as inf

    monkeypatch.setattr(inf, "default_checkpoint", lambda: tmp_path / "weights" / "demo")
    res = run("animate", media["photo"], media["driver"], "-o", tmp_path / "o.mp4")
    assert res.exit_code != 0
    assert "demo weights are not installed" in res.text


def test_driver_whose_audio_ends_early_keeps_every_frame(run, ckpt, tmp_path):
    from headpuppet.media.video import probe

    driver = shared_file("videos/lp_d1.mp4")  # 16 frames, AAC audio 0.48 s < 0.53 s of picture
    out = tmp_path / "o.mp4"
    res = run("animate", shared_file("photos/fr_obama.jpg"), driver, "-o", out, "-c", ckpt, "--device", "cpu")
    assert res.exit_code == 0, res.text
    assert probe(out).num_frames == probe(driver).num_frames


def test_precision_option(run, media, ckpt, tmp_path):
    """--precision fp32 and bf16 both render; anything else is one line before any work."""
    from headpuppet.media.video import probe

    for precision in ("fp32", "bf16", "AUTO"):
        out = tmp_path / f"{precision}.mp4"
        res = run("animate", media["photo"], media["driver"], "-o", out, "--checkpoint", ckpt, "--device", "cpu",
                  "--precision", precision)
        assert res.exit_code == 0, res.text
        assert probe(out).num_frames == N_FRAMES
    bad = tmp_path / "bad.mp4"
    res = run("animate", media["photo"], media["driver"], "-o", bad, "--checkpoint", ckpt, "--precision", "fp8")
    assert res.exit_code == 2 and "--precision" in res.text and "fp8" in res.text and not bad.exists()
