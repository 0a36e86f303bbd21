"""Hostile input, every command (issue 10): never destroy an input, never show a traceback, never hang.

The rule checked everywhere: a one-line reason and a non-zero exit, or correct handling; no
traceback; no output left looking complete after a failure; no input ever modified. Tiny random
checkpoints and a tiny dataset of astronaut crops (headpuppet.testing),
synthetic videos written with headpuppet.media.video.VideoWriter, a fake landmark detector that finds a
face in any frame that is not dark. Classes (counted in ``CASES`` at the end): data loss, media
read right, tracebacks, hangs, wrong answers, resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headpuppet import hookimpl
from headpuppet.testing import TwoFaces, make_checkpoint, make_dataset, make_pm, strip_ansi, tiny_config

ROOT = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ helpers

def _invoke(pm, *args, env=None):
    from headpuppet.cli import build_app

    res = CliRunner().invoke(build_app(pm), [str(a) for a in args], env=env)
    res.text = strip_ansi(res.output)
    return res


def _refused(res, *words, code=None) -> str:
    """A non-zero exit with exactly one ``error:`` line, no traceback, and ``words`` in it."""
    text = res.text
    assert res.exit_code != 0, text
    if code is not None:
        assert res.exit_code == code, text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, text
    for w in words:
        assert w.lower() in errors[0].lower(), text
    return errors[0]


def _usage_error(res, option: str) -> None:
    """Typer refused the value of ``option`` (exit 2), no traceback."""
    assert res.exit_code == 2, res.text
    assert "Traceback" not in res.text and option in res.text, res.text


def _snapshot(*paths) -> dict:
    """Every file (and symlink target) under ``paths``: name -> sha256, to prove nothing changed."""
    out = {}
    for p in map(Path, paths):
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
        if p.is_dir():
            out[str(p) + "/"] = sorted(q.name for q in p.iterdir())
    return out


def _video(path: Path, n: int = 6, size=(48, 48), fps: float = 10.0) -> Path:
    from headpuppet.media.video import VideoWriter

    with VideoWriter(path, fps) as w:
        for i in range(n):
            w.write(np.full((size[1], size[0], 3), 100 + 10 * i, np.uint8))
    return path


def _ffmpeg(*args) -> None:
    from headpuppet.media.video import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", *map(str, args)], check=True)


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


# ----------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def pm():
    return make_pm()  # entry points + the fake "two-faces" detector


@pytest.fixture(scope="module")
def world(tmp_path_factory, pm):
    """Inputs every test may read but never change: a checkpoint, media, a dataset, a run."""
    from skimage import data

    from headpuppet.config import save_config
    from headpuppet.media.imaging import write_image
    from headpuppet.fewshot.animator import Animator
    from headpuppet.training.loop import meta_train

    root = tmp_path_factory.mktemp("world")
    w = {"root": root}
    w["ckpt"] = make_checkpoint(root / "run", detector="two-faces")            # root/run/checkpoints/step-0000010
    w["photo"] = root / "a.png"
    write_image(w["photo"], data.astronaut()[::4, ::4])
    w["photos"] = root / "photos"
    w["photos"].mkdir()
    write_image(w["photos"] / "a.png", data.astronaut()[::4, ::4])
    w["driver"] = _video(root / "driver.mp4")
    w["srcvid"] = _video(root / "source.mp4", n=4)
    animator = Animator.from_checkpoint(w["ckpt"], pm=pm)
    person = animator.prepare_source([data.astronaut()[::4, ::4]], detector=TwoFaces())
    w["person"] = animator.save_person(person, root / "person")
    w["data"] = make_dataset(root / "ds", videos=2, frames=4)
    w["config"] = root / "tiny.yaml"
    save_config(tiny_config(), w["config"])
    cfg = tiny_config(steps=2, checkpoint_every=1, keep_checkpoints=0)
    w["train_run"] = meta_train(cfg, w["data"], out_root=root / "runs", pm=pm, device="cpu")
    return w


@pytest.fixture
def run_copy(world, tmp_path):
    """A copy of the two-checkpoint training run, free to damage."""
    import shutil

    dst = tmp_path / world["train_run"].name
    shutil.copytree(world["train_run"], dst)
    return dst


# ======================================================================= 1. data loss: never over an input

def _spellings(target: Path, tmp: Path) -> dict[str, str]:
    link = tmp / "link.mp4"
    if not link.exists():
        link.symlink_to(target)
    hard = tmp / "hard.mp4"
    if not hard.exists():
        os.link(target, hard)
    rel = os.path.relpath(target, Path.cwd())
    return {"absolute": str(target), "relative": rel, "dot": os.path.join(".", rel),
            "dotdot": str(target.parent / ".." / target.parent.name / target.name),
            "symlink": str(link), "hardlink": str(hard)}


@pytest.mark.parametrize("spelling", ["absolute", "relative", "dot", "dotdot", "symlink", "hardlink"])
def test_animate_output_is_never_the_driver(world, pm, tmp_path, spelling):
    before = _snapshot(world["driver"])
    out = _spellings(world["driver"], tmp_path)[spelling]
    res = _invoke(pm, "animate", world["photo"], world["driver"], "-o", out, "-c", world["ckpt"], "--device", "cpu")
    _refused(res, "driver", "-o")
    assert _snapshot(world["driver"]) == before


@pytest.mark.parametrize("spelling", ["absolute", "relative", "symlink"])
def test_animate_output_is_never_the_source(world, pm, tmp_path, spelling):
    before = _snapshot(world["srcvid"])
    out = _spellings(world["srcvid"], tmp_path)[spelling]
    res = _invoke(pm, "animate", world["srcvid"], world["driver"], "-o", out, "-c", world["ckpt"], "--device", "cpu")
    _refused(res, "source")
    assert _snapshot(world["srcvid"]) == before


@pytest.mark.parametrize("where", ["step-folder", "run-folder", "checkpoints-folder", "inside-checkpoint",
                                   "parent-of-run", "symlink-to-checkpoint", "source-folder", "holds-source"])
def test_fine_tune_never_writes_into_its_checkpoint_or_sources(world, pm, tmp_path, where):
    ckpt = world["ckpt"]
    run = ckpt.parent.parent
    link = tmp_path / "ck"
    link.symlink_to(ckpt)
    source = world["photos"] if where in ("source-folder",) else world["photo"]
    given_ckpt = run if where in ("run-folder", "parent-of-run") else ckpt
    out = {"step-folder": ckpt, "run-folder": run, "checkpoints-folder": ckpt.parent,
           "inside-checkpoint": ckpt / "person", "parent-of-run": run.parent, "symlink-to-checkpoint": link,
           "source-folder": world["photos"], "holds-source": world["photo"].parent}[where]
    before = _snapshot(run, source)
    res = _invoke(pm, "fine-tune", given_ckpt, source, "--out", out, "--steps", 1, "--device", "cpu")
    _refused(res, "--out")
    assert _snapshot(run, source) == before


def test_fine_tune_will_not_fill_a_folder_of_other_files(world, pm, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    res = _invoke(pm, "fine-tune", world["ckpt"], world["photo"], "--out", tmp_path, "--steps", 1)
    _refused(res, "not a person folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.parametrize("where", ["the-video", "holds-the-video"])
def test_preprocess_output_is_never_an_input(world, pm, tmp_path, where):
    video = _video(tmp_path / "in" / "clip.mp4")
    out = {"the-video": video, "holds-the-video": tmp_path}[where]
    before = _snapshot(video)
    res = _invoke(pm, "preprocess", video, "--out", out, "--detector", "two-faces")
    _refused(res)
    assert _snapshot(video) == before


def test_preprocess_output_is_never_the_input_folder(world, pm, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    from headpuppet.media.imaging import write_image

    write_image(frames / "0.png", np.full((32, 32, 3), 120, np.uint8))
    before = _snapshot(frames)
    _refused(_invoke(pm, "preprocess", frames, "--out", f"{frames}/.", "--detector", "two-faces"), "input")
    assert _snapshot(frames) == before


@pytest.mark.parametrize("which", ["dataset", "checkpoint", "inside-dataset"])
def test_evaluate_report_is_never_written_into_its_inputs(world, pm, which):
    out = {"dataset": world["data"], "checkpoint": world["ckpt"], "inside-dataset": world["data"] / "report"}[which]
    before = _snapshot(world["data"], world["ckpt"])
    res = _invoke(pm, "evaluate", world["ckpt"], world["data"], "--out", out, "--metrics", "ssim")
    _refused(res, "--out")
    assert _snapshot(world["data"], world["ckpt"]) == before


@pytest.mark.parametrize("which", ["dataset", "inside-dataset"])
def test_meta_train_runs_are_never_written_into_the_dataset(world, pm, which):
    out = {"dataset": world["data"], "inside-dataset": world["data"] / "runs"}[which]
    before = _snapshot(world["data"])
    res = _invoke(pm, "meta-train", world["data"], "--config", world["config"], "--out", out, "--device", "cpu")
    _refused(res, "dataset")
    assert _snapshot(world["data"]) == before


def test_weights_import_never_reads_and_overwrites_its_own_target(pm, tmp_path):
    target = tmp_path / "vggface.safetensors"
    target.write_bytes(b"converted weights")
    res = _invoke(pm, "weights", "import", "vggface", target, "--dir", tmp_path)
    _refused(res, "original")
    assert target.read_bytes() == b"converted weights"


# =========================================================== 2. media come in right (frames, fps, images)

def _vfr_driver(path: Path) -> Path:
    """testsrc at 60 fps with irregular frames dropped (variable frame rate), and 2 s of audio."""
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=60", "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
            "-t", 2, "-vf", "select='not(mod(n\\,4))+eq(mod(n\\,9)\\,1)'", "-fps_mode", "vfr", "-c:v", "libx264",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", path)
    return path


def test_variable_frame_rate_driver_keeps_frames_duration_and_audio(world, pm, tmp_path):
    from headpuppet.media.video import probe, read_frames

    driver = _vfr_driver(tmp_path / "vfr.mp4")
    info = probe(driver)
    assert sum(1 for _ in read_frames(driver)) == info.num_frames  # each frame once, not resampled to 60 fps
    out = tmp_path / "out.mp4"
    res = _invoke(pm, "animate", world["photo"], driver, "-o", out, "-c", world["ckpt"], "--device", "cpu")
    assert res.exit_code == 0, res.text
    got = probe(out)
    assert got.num_frames == info.num_frames and got.has_audio
    assert abs(got.num_frames / got.fps - info.num_frames / info.fps) < 1.0 / info.fps
    assert abs(got.duration - info.duration) < 0.15


def _astro(size: int = 64) -> np.ndarray:
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def _img_gray8(p):
    from PIL import Image

    g = _astro()[..., 1]
    Image.fromarray(g).save(p)
    return np.repeat(g[..., None], 3, 2), 0


def _img_gray16(p):
    import cv2

    g16 = (_astro()[..., 1].astype(np.uint16) * 257)
    cv2.imwrite(str(p), g16)
    return np.repeat(_astro()[..., 1:2], 3, 2), 0


def _img_rgb16(p):
    import cv2

    rgb16 = _astro().astype(np.uint16) * 257
    cv2.imwrite(str(p), rgb16[..., ::-1])
    return _astro(), 1


def _img_gray16_tiff(p):
    from PIL import Image

    g16 = (_astro()[..., 1].astype(np.uint16) * 257)
    Image.fromarray(g16).save(p)
    return np.repeat(_astro()[..., 1:2], 3, 2), 0


def _img_rgba(p):
    from PIL import Image

    rgba = np.dstack([_astro(), np.full((64, 64), 255, np.uint8)])
    rgba[:, :32, 3] = 0
    rgba[:, :32, :3] = 7  # hidden colour behind transparency must not show
    Image.fromarray(rgba).save(p)
    want = _astro().copy()
    want[:, :32] = 255
    return want, 0


def _img_la(p):
    from PIL import Image

    la = np.dstack([_astro()[..., 1], np.full((64, 64), 255, np.uint8)])
    la[32:, :, 1] = 0
    Image.fromarray(la).save(p)
    want = np.repeat(_astro()[..., 1:2], 3, 2)
    want[32:] = 255
    return want, 0


def _img_palette(p):
    from PIL import Image

    im = Image.fromarray(_astro()).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    im.save(p)
    return np.asarray(im.convert("RGB")), 0


def _img_cmyk(p):
    from PIL import Image

    Image.fromarray(_astro()).convert("CMYK").save(p, quality=98)
    return _astro(), 12


def _img_bilevel(p):
    from PIL import Image

    bw = (_astro()[..., 1] > 128)
    Image.fromarray(bw).convert("1").save(p)
    return np.repeat((bw * 255).astype(np.uint8)[..., None], 3, 2), 0


def _exif(orientation: int, rotate):
    def make(p):
        from PIL import Image

        base = _astro()[:, :48]  # not square: the rotation shows in the shape
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = rotate(base, inverse=True)  # what a camera stores for this orientation
        Image.fromarray(np.ascontiguousarray(stored)).save(p, exif=exif)
        return base, 0
    return make


def _rot(k):
    return lambda a, inverse=False: np.rot90(a, -k if inverse else k)


IMAGES = {
    "gray8.png": _img_gray8, "gray16.png": _img_gray16, "rgb16.png": _img_rgb16, "gray16.tif": _img_gray16_tiff,
    "rgba.png": _img_rgba, "la.png": _img_la, "palette.png": _img_palette, "cmyk.jpg": _img_cmyk,
    "bilevel.png": _img_bilevel,
    "exif-rot90.png": _exif(6, _rot(-1)), "exif-rot180.png": _exif(3, _rot(2)), "exif-rot270.png": _exif(8, _rot(1)),
}


@pytest.mark.parametrize("name", list(IMAGES))
def test_images_of_every_kind_come_in_as_rgb8(tmp_path, name):
    from headpuppet.media.imaging import read_image

    path = tmp_path / name
    want, tol = IMAGES[name](path)
    got = read_image(path)
    assert got.dtype == np.uint8 and got.shape == want.shape, (got.shape, want.shape)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.mean() <= max(tol, 0.5) and (tol or diff.max() <= 1), (diff.mean(), diff.max())


# ============================================================================ 3. tracebacks -> one line

def test_config_that_is_a_folder(world, pm, tmp_path):
    _refused(_invoke(pm, "meta-train", world["data"], "--config", tmp_path, "--out", tmp_path / "r"), "folder")


def test_config_that_is_not_utf8(world, pm, tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("train:\n  steps: 3 # caf\xe9\n".encode("latin-1"))
    _refused(_invoke(pm, "meta-train", world["data"], "--config", bad, "--out", tmp_path / "r"), "UTF-8")


def test_config_that_is_binary(world, pm, tmp_path):
    bad = tmp_path / "model.yaml"
    bad.write_bytes(bytes(range(256)))
    _refused(_invoke(pm, "meta-train", world["data"], "--config", bad, "--out", tmp_path / "r"))


def _cmd_with_device(world, tmp_path, command: str, device: str) -> list:
    return {
        "animate": ["animate", world["photo"], world["driver"], "-o", tmp_path / "o.mp4", "-c", world["ckpt"]],
        "fine-tune": ["fine-tune", world["ckpt"], world["photo"], "--out", tmp_path / "p", "--steps", 1],
        "evaluate": ["evaluate", "none", world["data"], "--out", tmp_path / "r", "--metrics", "ssim"],
        "meta-train": ["meta-train", world["data"], "--config", world["config"], "--out", tmp_path / "r"],
    }[command] + ["--device", device]


COMMANDS = ["animate", "fine-tune", "evaluate", "meta-train"]


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "gpu0"])
@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_device_is_one_line_in_every_command(world, pm, tmp_path, command, device):
    _refused(_invoke(pm, *_cmd_with_device(world, tmp_path, command, device)), "--device")
    assert not any(tmp_path.iterdir())  # nothing written


@NO_CUDA
@pytest.mark.parametrize("command", COMMANDS)
def test_cuda_without_cuda_is_one_line_in_every_command(world, pm, tmp_path, command):
    _refused(_invoke(pm, *_cmd_with_device(world, tmp_path, command, "cuda")), "CUDA", "--device cpu")
    assert not any(tmp_path.iterdir())


def _unwritable_cases(world, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return {
        "animate-parent-is-a-file": ["animate", world["photo"], world["driver"], "-o", blocker / "o.mp4",
                                     "-c", world["ckpt"], "--device", "cpu"],
        "animate-in-proc": ["animate", world["photo"], world["driver"], "-o", "/proc/o.mp4", "-c", world["ckpt"]],
        "fine-tune-in-proc": ["fine-tune", world["ckpt"], world["photo"], "--out", "/proc/person", "--steps", 1],
        "evaluate-in-proc": ["evaluate", "none", world["data"], "--out", "/proc/report", "--metrics", "ssim"],
        "evaluate-under-a-file": ["evaluate", "none", world["data"], "--out", blocker / "r", "--metrics", "ssim"],
        "preprocess-in-proc": ["preprocess", world["driver"], "--out", "/proc/ds", "--detector", "two-faces"],
        "meta-train-in-proc": ["meta-train", world["data"], "--config", world["config"], "--out", "/proc/runs",
                               "--device", "cpu"],
        "weights-in-proc": ["weights", "import", "vggface", world["photo"], "--dir", "/proc/w"],
    }


@pytest.mark.parametrize("case", ["animate-parent-is-a-file", "animate-in-proc", "fine-tune-in-proc",
                                  "evaluate-in-proc", "evaluate-under-a-file", "preprocess-in-proc",
                                  "meta-train-in-proc", "weights-in-proc"])
def test_unwritable_outputs_fail_first_in_one_line(world, pm, tmp_path, case):
    t0 = time.perf_counter()
    res = _invoke(pm, *_unwritable_cases(world, tmp_path)[case])
    _refused(res, "cannot write")
    assert time.perf_counter() - t0 < 20  # before the work, not after it


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_refused_before_work(world, pm, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        _refused(_invoke(pm, "evaluate", "none", world["data"], "--out", ro / "r", "--metrics", "ssim"), "cannot write")
    finally:
        ro.chmod(0o755)


def _broken_checkpoint(world, tmp_path, how: str) -> Path:
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(world["ckpt"], ck)
    meta = json.loads((ck / "meta.json").read_text())
    if how == "meta-list":
        (ck / "meta.json").write_text("[1, 2, 3]")
    elif how == "meta-string":
        (ck / "meta.json").write_text('"headpuppet"')
    elif how == "meta-binary":
        (ck / "meta.json").write_bytes(b"\xff\xfe\x00garbage")
    elif how in ("step-string", "config-list", "num-videos-string", "networks-int", "plugins-list"):
        key, value = {"step-string": ("step", "ten"), "config-list": ("config", [1]),
                      "num-videos-string": ("num_videos", "3"), "networks-int": ("networks", 5),
                      "plugins-list": ("plugins", ["x"])}[how]
        meta[key] = value
        (ck / "meta.json").write_text(json.dumps(meta))
    elif how == "config-bad-value":
        meta["config"]["model"]["ch"] = "wide"
        (ck / "meta.json").write_text(json.dumps(meta))
    elif how == "truncated-generator":
        f = ck / "generator.safetensors"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return ck


CKPT_DAMAGE = ["meta-list", "meta-string", "meta-binary", "step-string", "config-list", "num-videos-string",
               "networks-int", "plugins-list", "config-bad-value", "truncated-generator"]


@pytest.mark.parametrize("how", CKPT_DAMAGE)
def test_malformed_checkpoint_is_one_line(world, pm, tmp_path, how):
    ck = _broken_checkpoint(world, tmp_path, how)
    res = _invoke(pm, "animate", world["photo"], world["driver"], "-o", tmp_path / "o.mp4", "-c", ck, "--device", "cpu")
    _refused(res, str(ck))
    assert not (tmp_path / "o.mp4").exists()


def _broken_person(world, tmp_path, how: str) -> Path:
    import shutil

    p = tmp_path / "person"
    shutil.copytree(world["person"], p)
    meta = json.loads((p / "meta.json").read_text())
    if how == "meta-list":
        (p / "meta.json").write_text("[]")
    elif how in ("version-string", "config-string", "box-string", "box-short", "num-videos-float", "labels-dict"):
        key, value = {"version-string": ("version", "1"), "config-string": ("config", "small"),
                      "box-string": ("box", "0,0,10"), "box-short": ("box", [1]),
                      "num-videos-float": ("num_videos", 1.5), "labels-dict": ("labels", {"a": 1})}[how]
        meta[key] = value
        (p / "meta.json").write_text(json.dumps(meta))
    elif how in ("truncated-person", "truncated-generator"):
        f = p / ("person.safetensors" if how == "truncated-person" else "generator.safetensors")
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif how == "person-without-psi":
        from safetensors.torch import load_file, save_file

        t = load_file(str(p / "person.safetensors"))
        del t["psi"]
        save_file(t, str(p / "person.safetensors"))
    return p


PERSON_DAMAGE = ["meta-list", "version-string", "config-string", "box-string", "box-short", "num-videos-float",
                 "labels-dict", "truncated-person", "truncated-generator", "person-without-psi"]


@pytest.mark.parametrize("how", PERSON_DAMAGE)
def test_malformed_person_folder_is_one_line(world, pm, tmp_path, how):
    p = _broken_person(world, tmp_path, how)
    res = _invoke(pm, "animate", p, world["driver"], "-o", tmp_path / "o.mp4", "--device", "cpu")
    _refused(res, "person")
    assert not (tmp_path / "o.mp4").exists()


DATASET_DAMAGE = {
    "dataset-json-list": ("dataset.json", "[]"),
    "dataset-size-string": ("dataset.json", '{"format": "headpuppet-dataset", "version": 1, "size": "big"}'),
    "video-meta-list": ("video/meta.json", "[1]"),
    "video-frames-string": ("video/meta.json", '{"num_frames": "many", "size": 32}'),
}


@pytest.mark.parametrize("how", list(DATASET_DAMAGE))
def test_malformed_dataset_is_one_line(world, pm, tmp_path, how):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(world["data"], ds)
    rel, text = DATASET_DAMAGE[how]
    target = ds / rel if not rel.startswith("video/") else sorted((ds / "videos").iterdir())[0] / rel[6:]
    target.write_text(text)
    _refused(_invoke(pm, "evaluate", "none", ds, "--out", tmp_path / "r", "--metrics", "ssim"), str(ds))
    assert not (tmp_path / "r").exists()


class _Evil:
    """Unpickling this would run code; weights_only=True loading refuses it."""

    def __reduce__(self):
        return (os.getcwd, ())


@pytest.mark.parametrize("name", ["vggface", "arcface-r100"])
def test_weights_import_of_a_pickle_with_code_is_one_line(pm, tmp_path, name):
    evil = tmp_path / "evil.pth"
    torch.save({"conv.weight": _Evil()}, evil)
    _refused(_invoke(pm, "weights", "import", name, evil, "--dir", tmp_path / "w"), "evil.pth")
    assert not (tmp_path / "w" / f"{name}.safetensors").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_dataset_npy_with_pickled_objects_is_one_line(world, pm, tmp_path, workers):
    import shutil

    ds = tmp_path / "ds"
    shutil.copytree(world["data"], ds)
    video = sorted((ds / "videos").iterdir())[0]
    np.save(video / "landmarks.npy", np.array([{"not": "numbers"}] * 4, dtype=object), allow_pickle=True)
    res = _invoke(pm, "meta-train", ds, "--config", world["config"], "--out", tmp_path / "runs", "--device", "cpu",
                  "--workers", workers, "--steps", 2)
    _refused(res, "pickled", "landmarks.npy")


def test_half_written_stats_line_is_tolerated_on_resume(world, pm, run_copy):
    stats = run_copy / "stats.jsonl"
    with stats.open("a") as f:
        f.write('{"step": 3, "time": 17')  # a crash mid-write
    res = _invoke(pm, "meta-train", "--resume", run_copy, "--steps", 3, "--device", "cpu")
    assert res.exit_code == 0, res.text
    recs = [json.loads(line) for line in stats.read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3]


def test_read_stats_skips_a_half_written_line(tmp_path):
    from headpuppet.training.runs import read_stats

    (tmp_path / "stats.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "Lo')
    assert [r["step"] for r in read_stats(tmp_path / "stats.jsonl")] == [1, 2]


def test_absurd_batch_size_is_one_line_and_quick(world, pm, tmp_path):
    t0 = time.perf_counter()
    res = _invoke(pm, "meta-train", world["data"], "--config", world["config"], "--out", tmp_path / "r",
                  "--device", "cpu", "--batch-size", 10**9, "--workers", 1)
    _refused(res, "batch")
    assert time.perf_counter() - t0 < 30


# =================================================================================== 4. never hang

HANG_SCRIPT = textwrap.dedent("""
    import sys
    from headpuppet.training import distributed
    def boom(self):
        raise MemoryError
        yield
    distributed.EpisodeBatchSampler.__iter__ = boom   # the first batch fetch runs out of memory
    sys.argv = ["headpuppet"] + sys.argv[1:]
    from headpuppet.cli import main
    main()
""")


def _python_env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), HEADPUPPET_DISABLE_PLUGINS="face_alignment,metrics")
    env.pop("HEADPUPPET_PLUGINS_DIR", None)
    return env


def test_memory_error_with_loader_workers_exits_instead_of_hanging(world, tmp_path):
    """A MemoryError once workers have started: one line, exit 1, the workers ended (no hang)."""
    proc = subprocess.run([sys.executable, "-c", HANG_SCRIPT, "meta-train", str(world["data"]), "--config",
                           str(world["config"]), "--out", str(tmp_path / "r"), "--device", "cpu", "--workers", "2"],
                          capture_output=True, text=True, timeout=120, env=_python_env())
    err = strip_ansi(proc.stderr)
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "out of memory" in err


# ============================================================================ 5. wrong answers, fixed

@pytest.mark.parametrize("size", [(8, 64), (64, 8), (6, 6)])
def test_videos_with_one_digit_sizes_are_readable(tmp_path, size):
    from headpuppet.media.video import probe, read_frames

    v = _video(tmp_path / "thin.mp4", n=3, size=size)
    info = probe(v)
    assert (info.width, info.height, info.num_frames) == (size[0], size[1], 3)
    assert len(list(read_frames(v))) == 3


@pytest.mark.parametrize("max_frames", [10**6, 2**31, 10**18])
def test_huge_max_frames_reads_every_frame(world, max_frames):
    from headpuppet.media.video import read_frames

    assert len(list(read_frames(world["driver"], max_frames=max_frames))) == 6


def test_huge_max_frames_in_preprocess(pm, tmp_path):
    video = _video(tmp_path / "clip.mp4", n=4)
    res = _invoke(pm, "preprocess", video, "--out", tmp_path / "ds", "--detector", "two-faces", "--size", 16,
                  "--max-frames", 10**15)
    assert res.exit_code == 0, res.text
    from headpuppet.data.format import open_dataset

    assert open_dataset(tmp_path / "ds").videos[0].num_frames == 4


def test_importing_a_folder_as_weights_says_folder(pm, tmp_path):
    (tmp_path / "vgg").mkdir()
    _refused(_invoke(pm, "weights", "import", "vggface", tmp_path / "vgg", "--dir", tmp_path / "w"), "is a folder")


@pytest.mark.parametrize("name", ["-out/x.mp4", "-x.mp4", "--help.mp4", "-i/y.mp4", "file:z.mp4"])
def test_paths_are_never_ffmpeg_options(tmp_path, monkeypatch, name):
    from headpuppet.media.video import probe, read_frames

    monkeypatch.chdir(tmp_path)
    v = _video(Path(name), n=3)
    assert (tmp_path / name).is_file()
    assert probe(name).num_frames == 3 and len(list(read_frames(name))) == 3
    assert sorted(p.name for p in Path(name).parent.iterdir() if p.name.startswith(".")) == []  # no temp left
    assert v == Path(name)


def test_animate_output_in_a_dash_folder(world, pm, tmp_path, monkeypatch):
    from headpuppet.media.video import probe

    monkeypatch.chdir(tmp_path)
    res = _invoke(pm, "animate", world["photo"], world["driver"], "-o", "-out/x.mp4", "-c", world["ckpt"],
                  "--device", "cpu")
    assert res.exit_code == 0, res.text
    assert probe(tmp_path / "-out" / "x.mp4").num_frames == 6


NUMERIC = {
    "meta-train --steps -5": ("meta-train", "--steps", -5), "meta-train --steps 0": ("meta-train", "--steps", 0),
    "meta-train --batch-size 0": ("meta-train", "--batch-size", 0),
    "meta-train --k-shots 0": ("meta-train", "--k-shots", 0), "meta-train --workers -1": ("meta-train", "--workers", -1),
    "meta-train --max-steps 0": ("meta-train", "--max-steps", 0), "meta-train --ema 1.5": ("meta-train", "--ema", 1.5),
    "meta-train --ema -0.1": ("meta-train", "--ema", -0.1), "meta-train --ema nan": ("meta-train", "--ema", "nan"),
    "meta-train --seed -1": ("meta-train", "--seed", -1),
    "animate --batch-size 0": ("animate", "--batch-size", 0), "animate --fps 0": ("animate", "--fps", 0),
    "animate --fps inf": ("animate", "--fps", "inf"), "animate --smooth -1": ("animate", "--smooth", -1),
    "animate --shots 0": ("animate", "--shots", 0), "animate --finetune-steps -1": ("animate", "--finetune-steps", -1),
    "fine-tune --steps -5": ("fine-tune", "--steps", -5), "fine-tune --frames 0": ("fine-tune", "--frames", 0),
    "fine-tune --seed -1": ("fine-tune", "--seed", -1), "evaluate --seed -1": ("evaluate", "--seed", -1),
    "evaluate --max-videos 0": ("evaluate", "--max-videos", 0),
    "evaluate --frames-per-video 0": ("evaluate", "--frames-per-video", 0),
    "evaluate --examples -1": ("evaluate", "--examples", -1), "evaluate --shots 0": ("evaluate", "--shots", 0),
    "preprocess --size 4": ("preprocess", "--size", 4), "preprocess --every 0": ("preprocess", "--every", 0),
    "preprocess --max-frames 0": ("preprocess", "--max-frames", 0), "preprocess --workers 0": ("preprocess", "--workers", 0),
}


@pytest.mark.parametrize("case", list(NUMERIC))
def test_numeric_options_outside_their_range_are_refused(world, pm, tmp_path, case):
    command, option, value = NUMERIC[case]
    base = {"meta-train": ["meta-train", world["data"], "--config", world["config"], "--out", tmp_path / "r"],
            "animate": ["animate", world["photo"], world["driver"], "-o", tmp_path / "o.mp4", "-c", world["ckpt"]],
            "fine-tune": ["fine-tune", world["ckpt"], world["photo"], "--out", tmp_path / "p"],
            "evaluate": ["evaluate", "none", world["data"], "--out", tmp_path / "rep"],
            "preprocess": ["preprocess", world["driver"], "--out", tmp_path / "ds", "--detector", "two-faces"]}[command]
    res = _invoke(pm, *base, option, value, "--device" if command in COMMANDS else "--size",
                  "cpu" if command in COMMANDS else (value if option == "--size" else 16))
    _usage_error(res, option)
    assert not any(tmp_path.iterdir())  # no step-0 checkpoint, nothing at all


@pytest.mark.parametrize("override", ["train.steps=-5", "train.lr_g=.nan", "train.batch_size=0", "train.ema=1",
                                      "train.betas=[0.5]", "model.image_size=2", "loss.perceptual.vgg19=-1"])
def test_out_of_range_config_keys_are_one_line(world, pm, tmp_path, override):
    res = _invoke(pm, "meta-train", world["data"], "--config", world["config"], "--set", override,
                  "--out", tmp_path / "r", "--device", "cpu")
    _refused(res, override.split("=")[0].split(".")[0])
    assert not (tmp_path / "r").exists()


class _Impostor:
    """A third-party plugin that claims the project's own detector name."""

    @hookimpl
    def register_landmark_detectors(self, register):
        register("mediapipe", TwoFaces)
        register("impostor-ok", TwoFaces)


def test_third_party_claiming_mediapipe_does_not_take_landmarks_down():
    from headpuppet.plugins import make_plugin_manager, registry

    pm = make_plugin_manager(extra_plugins=[("impostor", _Impostor())])
    reg = registry(pm, "landmarks")
    assert reg["mediapipe"].plugin == "mediapipe"       # the project's own wins
    assert "impostor-ok" in reg                          # the rest of the plugin works
    reasons = [r for name, r in pm.failures if name == "impostor"]
    assert len(reasons) == 1 and "mediapipe" in reasons[0] and "\n" not in reasons[0]
    assert "DISABLE_PLUGINS=mediapipe" not in reasons[0]  # never advise blocking the project's own


def test_third_party_claiming_mediapipe_cli_still_works(tmp_path):
    from headpuppet.plugins import make_plugin_manager

    pm = make_plugin_manager(extra_plugins=[("impostor", _Impostor())])
    res = _invoke(pm, "plugins", "--json")
    assert res.exit_code == 0, res.text
    rows = json.loads(res.text[res.text.index("[\n"):])
    owners = {r["name"]: r["plugin"] for r in rows if r["kind"] == "landmarks"}
    assert owners["mediapipe"] == "mediapipe" and owners["impostor-ok"] == "impostor"


def _signal_after_first_step(monkeypatch, signum):
    from headpuppet.training import loop

    real = loop.train_step

    def step_then_signal(*a, **k):
        out = real(*a, **k)
        os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_signal)


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_meta_train_stopped_by_a_signal_is_not_exit_0(world, pm, tmp_path, monkeypatch, signum, code):
    _signal_after_first_step(monkeypatch, signum)
    res = _invoke(pm, "meta-train", world["data"], "--config", world["config"], "--out", tmp_path / "r",
                  "--device", "cpu", "--steps", 50)
    assert res.exit_code == code, res.text
    assert "Traceback" not in res.text and "--resume" in res.text
    run = next((tmp_path / "r").iterdir())
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-0000001"  # saved before stopping


def _damage(run: Path, how: str) -> None:
    step2 = run / "checkpoints" / "step-0000002"
    if how == "truncated-weights":
        f = step2 / "generator.safetensors"
        f.write_bytes(f.read_bytes()[:100])
    elif how == "meta-garbage":
        (step2 / "meta.json").write_text("{not json")
    elif how == "state-garbage":
        (step2 / "state.pt").write_bytes(b"garbage")
    elif how == "latest-dangling":
        import shutil

        shutil.rmtree(step2)


@pytest.mark.parametrize("how", ["truncated-weights", "meta-garbage", "state-garbage", "latest-dangling"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(world, pm, run_copy, how):
    _damage(run_copy, how)
    res = _invoke(pm, "meta-train", "--resume", run_copy, "--steps", 3, "--device", "cpu")
    assert res.exit_code == 0, res.text
    notes = [line for line in res.text.splitlines() if "step-0000001" in line and "step-0000002" in line]
    assert len(notes) == 1, res.text                   # said in one line
    assert (run_copy / "checkpoints" / "latest").read_text().strip() == "step-0000003"
    steps = [json.loads(line)["step"] for line in (run_copy / "stats.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]                          # step 2 redone from step 1, its old record replaced


def test_every_checkpoint_damaged_is_one_line(world, pm, run_copy):
    for step in ("step-0000001", "step-0000002"):
        (run_copy / "checkpoints" / step / "meta.json").write_text("[]")
    _refused(_invoke(pm, "meta-train", "--resume", run_copy, "--steps", 3, "--device", "cpu"), "step-0000002")


# ============================================================================ 6. resume after SIGKILL

def test_resume_after_sigkill_continues_with_stats_intact(world, pm, tmp_path):
    """A real run killed with SIGKILL mid-training resumes from its last checkpoint; stats.jsonl
    then holds each step exactly once."""
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "headpuppet", "meta-train", str(world["data"]), "--config", str(world["config"]),
           "--out", str(out), "--device", "cpu", "--steps", "500", "--set", "train.checkpoint_every=2",
           "--set", "train.keep_checkpoints=0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_python_env())
    try:
        deadline = time.time() + 120
        latest = None
        while time.time() < deadline and proc.poll() is None:
            runs = list(out.glob("*/checkpoints/latest")) if out.exists() else []
            if runs and runs[0].read_text().strip() >= "step-0000004":
                latest = runs[0]
                break
            time.sleep(0.2)
        assert latest is not None, proc.stderr.read().decode() if proc.poll() is not None else "no checkpoint in time"
        time.sleep(0.3)  # mid-step, perhaps mid-write
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    run = latest.parent.parent
    saved = int(latest.read_text().strip().split("-")[1])
    res = _invoke(pm, "meta-train", "--resume", run, "--steps", saved + 2, "--device", "cpu")
    assert res.exit_code == 0, res.text
    assert (run / "checkpoints" / "latest").read_text().strip() == f"step-{saved + 2:07d}"
    steps = [json.loads(line)["step"] for line in (run / "stats.jsonl").read_text().splitlines()]
    assert steps == list(range(1, saved + 3))


# ------------------------------------------------------------------------------------ the case count

CASES = {
    "data loss (outputs over inputs)": 6 + 3 + 8 + 1 + 2 + 1 + 3 + 2 + 1,
    "media read right (VFR, image kinds)": 1 + len(IMAGES),
    "tracebacks -> one line": (3 + 12 + 4 + 8 + 1 + len(CKPT_DAMAGE) + len(PERSON_DAMAGE) + len(DATASET_DAMAGE)
                               + 2 + 2 + 2 + 1),
    "hangs": 1,
    "wrong answers": 3 + 3 + 1 + 1 + 5 + 1 + len(NUMERIC) + 7 + 2 + 2 + 4 + 1,
    "resume after SIGKILL": 1,
}
