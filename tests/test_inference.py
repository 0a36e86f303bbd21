"""Few-shot inference (headpuppet.fewshot.animator, .person): sources embedded once, G alone per frame,
person folders.

The tiny checkpoint and the fake detector come from headpuppet.testing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headpuppet.errors import CheckpointError, NoFaceError
from headpuppet.progress import Reporter
from headpuppet.testing import TwoFaces, make_checkpoint, make_pm, mediapipe_or_skip


class Recorder(Reporter):
    def __init__(self):
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@pytest.fixture
def animator(tmp_path):
    from headpuppet.fewshot.animator import Animator

    torch.set_num_threads(1)
    return Animator.from_checkpoint(make_checkpoint(tmp_path), pm=make_pm())


def test_prepare_source_embeds_once_and_render_runs_g_only(animator, astronaut):
    det = mediapipe_or_skip(animator.pm)
    calls = {"E": 0, "G": 0}
    animator.embedder.register_forward_hook(lambda *a: calls.__setitem__("E", calls["E"] + 1))
    animator.generator.register_forward_hook(lambda *a: calls.__setitem__("G", calls["G"] + 1))
    shots = [astronaut, astronaut[:, ::-1].copy()]
    person = animator.prepare_source(shots, detector=det, labels=["a", "b"])
    S = animator.size
    assert person.frames.shape == (2, S, S, 3) and person.frames.dtype == np.uint8
    assert person.points.shape == (2, 68, 2)
    # landmarks in crop px: inside the crop
    assert (person.points > 0).all() and (person.points < S).all()
    assert calls == {"E": 1, "G": 0}  # K shots in one embedder call
    with torch.no_grad():
        np.testing.assert_allclose(person.psi, animator.generator.project(person.e), atol=1e-6)
        np.testing.assert_allclose(person.w, animator.discriminator.w0[None] + person.e, atol=1e-6)
    assert person.box is not None and person.image is astronaut and person.faces_found == [1, 1]

    pts = np.repeat(person.points[:1], 5, 0) + np.linspace(0, 2, 5)[:, None, None].astype(np.float32)
    out = animator.render(person, pts, batch_size=2)
    assert out.shape == (5, S, S, 3) and out.dtype == np.uint8
    assert calls["E"] == 1 and calls["G"] == 3  # G only, in chunks of 2
    again = animator.render(person, pts, batch_size=5)
    assert np.abs(out.astype(int) - again.astype(int)).max() <= 1  # batching does not change frames
    assert not np.array_equal(out[0], out[4])  # different landmarks, different frames


def test_several_faces_picks_the_largest_and_warns(animator, astronaut):
    rec = Recorder()
    person = animator.prepare_source([astronaut], detector=TwoFaces(), labels=["astronaut.png"], reporter=rec)
    assert person.faces_found == [2]
    assert person.several_faces() == [("astronaut.png", 2)]
    assert any("2 faces" in w and "largest" in w for w in rec.warnings)
    assert person.box.side > 0.3 * astronaut.shape[1]  # the box of the big face, not the small one


def test_no_face_in_source_is_a_clear_error(animator):
    with pytest.raises(NoFaceError, match="no face found in the source black.png"):
        animator.prepare_source([np.zeros((64, 64, 3), np.uint8)], detector=TwoFaces(), labels=["black.png"])


def test_person_folder_round_trip(animator, astronaut, tmp_path):
    from headpuppet.fewshot.animator import Animator
    from headpuppet.fewshot.person import is_person_dir

    person = animator.prepare_source([astronaut], detector=TwoFaces())
    pts = np.repeat(person.points[:1], 3, 0)
    before = animator.render(person, pts)
    animator.save_person(person, tmp_path / "p")
    assert is_person_dir(tmp_path / "p")
    a2, p2 = Animator.from_person_dir(tmp_path / "p", pm=animator.pm)
    np.testing.assert_array_equal(a2.render(p2, pts), before)
    np.testing.assert_array_equal(p2.frames, person.frames)
    np.testing.assert_allclose(p2.points, person.points)
    assert p2.box == person.box and p2.image.shape == astronaut.shape
    assert a2.detector_name == "mediapipe"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    from headpuppet.fewshot.animator import Animator

    with pytest.raises(CheckpointError, match="no checkpoint at"):
        Animator.from_checkpoint(tmp_path / "nope")


def test_person_folder_keeps_one_row_of_w(animator, astronaut, tmp_path):
    from safetensors.torch import load_file

    from headpuppet.fewshot.animator import Animator

    assert animator.discriminator.W.shape[0] == 3
    person = animator.prepare_source([astronaut], detector=TwoFaces())
    animator.save_person(person, tmp_path / "p")
    d = load_file(str(tmp_path / "p" / "discriminator.safetensors"))
    assert [tuple(v.shape) for k, v in d.items() if k.endswith("W")] == [(1, animator.cfg.model.emb_dim)]
    a2, p2 = Animator.from_person_dir(tmp_path / "p", pm=animator.pm)
    torch.testing.assert_close(a2.discriminator.w0, animator.discriminator.w0)
    torch.testing.assert_close(p2.w, person.w)
