"""The Python API (``headpuppet.animate``, ``fine_tune``, ``load_model``; headpuppet.fewshot.api) end to
end on a tiny random model, its one-line errors, and the cheap ``import headpuppet`` it keeps.

The fake two-faces detector of test_inference finds a face in any frame that is not dark, so a
synthetic driver is enough and mediapipe is not needed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import headpuppet
from headpuppet.testing import make_checkpoint, make_pm

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from skimage import data

    from headpuppet.media.imaging import write_image
    from headpuppet.media.video import VideoWriter

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("api")
    photo = root / "astronaut.png"
    write_image(photo, data.astronaut())
    driver = root / "drv.mp4"
    with VideoWriter(driver, 10) as w:
        for i in range(6):
            w.write(np.full((48, 48, 3), 100 + 10 * i, np.uint8))
    return {"photo": photo, "driver": driver, "ckpt": make_checkpoint(root, detector="two-faces"), "root": root}


def test_import_headpuppet_is_cheap():
    """The CLI imports the package at start-up: the API must not pull in torch."""
    code = "import sys, headpuppet; assert callable(headpuppet.animate); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"


def test_api_end_to_end(files, tmp_path):
    from headpuppet.fewshot.animator import Animator
    from headpuppet.fewshot.person import is_person_dir
    from headpuppet.media.video import probe

    pm = make_pm()
    model = headpuppet.load_model(files["ckpt"], device="cpu", pm=pm)
    assert isinstance(model, Animator) and model.size == 32 and model.detector_name == "two-faces"

    res = headpuppet.animate(files["photo"], files["driver"], tmp_path / "out.mp4", checkpoint=files["ckpt"],
                             device="cpu", pm=pm)
    assert res.output == tmp_path / "out.mp4" and res.frames == 6 and res.fps == pytest.approx(10)
    assert res.device == "cpu" and res.several_faces == [("astronaut.png", 2)]
    info = probe(res.output)
    assert info.num_frames == 6 and (info.width, info.height) == (32, 32)

    person = headpuppet.fine_tune([str(files["photo"])], tmp_path / "person", checkpoint=files["ckpt"], steps=2,
                                  device="cpu", pm=pm)
    assert person.finetune_steps == 2 and person.num_shots == 1 and person.generator is not None
    assert is_person_dir(tmp_path / "person") and list((tmp_path / "person" / "previews").glob("*.png"))

    res = headpuppet.animate(tmp_path / "person", files["driver"], tmp_path / "p.mp4", device="cpu", pm=pm,
                             side_by_side=True)
    assert res.frames == 6 and probe(tmp_path / "p.mp4").width == 64  # driver crop | result


def test_api_default_output_name(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = headpuppet.animate([files["photo"]], files["driver"], checkpoint=files["ckpt"], device="cpu",
                             pm=make_pm())
    assert res.output == Path("astronaut_drv.mp4") and (tmp_path / "astronaut_drv.mp4").exists()


def test_api_errors_are_one_line(files, tmp_path, monkeypatch):
    import headpuppet.fewshot.animator as animator_module
    from headpuppet.errors import CheckpointError, MediaError

    def one_line(exc_info, pattern):
        text = str(exc_info.value)
        assert "\n" not in text and re.search(pattern, text), text

    with pytest.raises(MediaError) as e:
        headpuppet.animate(files["photo"], files["driver"], tmp_path / "out.txt", checkpoint=files["ckpt"])
    one_line(e, "must be a video file name")
    with pytest.raises(MediaError) as e:
        headpuppet.animate(files["photo"], files["driver"], files["driver"], checkpoint=files["ckpt"])
    one_line(e, "is the driver")
    with pytest.raises(CheckpointError) as e:
        headpuppet.load_model(tmp_path / "nope")
    one_line(e, "no checkpoint at")
    with pytest.raises(CheckpointError) as e:
        headpuppet.fine_tune(files["photo"], tmp_path / "person", checkpoint=tmp_path / "nope")
    one_line(e, "no checkpoint at")
    monkeypatch.setattr(animator_module, "default_checkpoint", lambda: tmp_path / "weights" / "demo")
    with pytest.raises(CheckpointError) as e:
        headpuppet.load_model()
    one_line(e, "demo weights are not installed")
    assert not (tmp_path / "person").exists() and not (tmp_path / "out.txt").exists()


@pytest.mark.slow
def test_docs_api_example_runs(tmp_path, monkeypatch):
    """The example of docs/api.md, as written (the demo model, mediapipe; about a minute on a CPU)."""
    from headpuppet.fewshot.animator import default_checkpoint

    if not default_checkpoint().exists():
        pytest.skip("weights/demo is not installed")
    text = (ROOT / "docs" / "api.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[-1]
    monkeypatch.setattr("tempfile.mkdtemp", lambda *a, **k: str(tmp_path))
    exec(compile(code, "docs/api.md", "exec"), {"__name__": "docs_api_example"})
    assert (tmp_path / "astronaut.mp4").exists() and (tmp_path / "person.mp4").exists()


def test_photos_are_fine_tuned_by_default_and_zero_skips_it(files, tmp_path):
    """A photo source is fine-tuned for the model's finetune.steps unless finetune_steps=0; a person
    folder is fine-tuned already and gets no more; an explicit count wins."""
    from headpuppet.fewshot.session import load_person

    pm = make_pm()
    default = load_person([files["photo"]], checkpoint=files["ckpt"], pm=pm, finetune_steps=None)
    assert default.person.finetune_steps == default.animator.cfg.finetune.steps > 0
    assert default.person.generator is not None                     # its own tuned copy of G
    skipped = load_person([files["photo"]], checkpoint=files["ckpt"], pm=pm, finetune_steps=0)
    assert skipped.person.finetune_steps == 0 and skipped.person.generator is None
    assert load_person([files["photo"]], checkpoint=files["ckpt"], pm=pm, finetune_steps=3).person.finetune_steps == 3
    headpuppet.fine_tune([str(files["photo"])], tmp_path / "person", checkpoint=files["ckpt"], steps=2, device="cpu", pm=pm)
    folder = load_person([tmp_path / "person"], pm=pm, finetune_steps=None)
    assert folder.person.finetune_steps == 2
