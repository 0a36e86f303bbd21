"""Few-shot fine-tuning (paper section 3.4, headpuppet.fewshot.finetune) and ``headpuppet fine-tune``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headpuppet.testing import TwoFaces, make_checkpoint, make_pm, mediapipe_or_skip, shared_file, strip_ansi

TRAIN = [0, 10, 20, 30, 40, 50]
HELD_OUT = [5, 25, 45, 70, 90]


def _frames(indices):
    from headpuppet.media.video import read_frames

    video = shared_file("videos/dtk_m030_neutral.mp4")
    wanted = set(indices)
    return [f for i, f in enumerate(read_frames(video, max_frames=max(indices) + 1)) if i in wanted]


def _l1(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() / 127.5)


def _held_out_gain(tmp_path, steps: int, size: int, **model) -> tuple[float, float]:
    from headpuppet.fewshot.animator import Animator

    torch.set_num_threads(1)
    pm = make_pm()
    det = mediapipe_or_skip(pm)
    animator = Animator.from_checkpoint(make_checkpoint(tmp_path, image_size=size, **model), pm=pm)
    person = animator.prepare_source(_frames(TRAIN), detector=det)
    held = animator.prepare_source(_frames(HELD_OUT), detector=det)  # crops + landmarks of unseen frames
    before = _l1(animator.render(person, held.points), held.frames)
    tuned = animator.fine_tune(person, steps, batch_size=4, lr_g=2e-3, lr_d=2e-3, seed=0)
    after = _l1(animator.render(tuned, held.points), held.frames)
    # the base model is untouched: feed-forward rendering gives the same frames as before
    assert _l1(animator.render(person, held.points), held.frames) == pytest.approx(before)
    return before, after


def test_fine_tuning_lowers_held_out_error(tmp_path):
    before, after = _held_out_gain(tmp_path, steps=25, size=32)
    assert after < 0.8 * before, (before, after)


@pytest.mark.slow
def test_fine_tuning_lowers_held_out_error_64px(tmp_path):
    before, after = _held_out_gain(tmp_path, steps=80, size=64, ch=8, max_ch=32, emb_dim=16)
    assert after < 0.7 * before, (before, after)


def test_psi_and_w_start_from_the_embedding(tmp_path, astronaut):
    from headpuppet.fewshot.animator import Animator

    animator = Animator.from_checkpoint(make_checkpoint(tmp_path), pm=make_pm())
    person = animator.prepare_source([astronaut, astronaut[:, ::-1].copy()], detector=TwoFaces())
    same = animator.fine_tune(person, 0)
    with torch.no_grad():
        np.testing.assert_allclose(same.psi, animator.generator.project(person.e), atol=1e-6)    # psi' = P e_new
        np.testing.assert_allclose(same.w, animator.discriminator.w0[None] + person.e, atol=1e-6)  # w' = w0 + e_new
    tuned = animator.fine_tune(person, 2, preview_dir=tmp_path / "prev", preview_every=1)
    assert not torch.allclose(tuned.psi, person.psi) and not torch.allclose(tuned.w, person.w)  # both trained
    assert tuned.generator is not animator.generator and tuned.finetune_steps == 2
    g0 = dict(animator.generator.named_parameters())
    assert any(not torch.equal(p, g0[n]) for n, p in tuned.generator.named_parameters())     # G fine-tuned
    previews = sorted((tmp_path / "prev").glob("*.png"))
    assert [p.name for p in previews] == ["step-0000001.png", "step-0000002.png"]
    from headpuppet.media.imaging import read_image

    S = animator.size
    assert read_image(previews[0]).shape == (2 * S, 4 * S, 3)  # rows: source | landmark | generated | real


def test_the_frames_targets_are_computed_once(tmp_path, astronaut, monkeypatch):
    """The content loss's activations of the T frames are computed once, before the steps, and each
    step takes its batch's rows; the steps are those of recomputing them at every step (bit for bit
    with one frame, within float rounding with two). Past the memory cap, every step computes them."""
    from headpuppet.fewshot import finetune
    from headpuppet.fewshot.animator import Animator
    from headpuppet.training.losses import ContentLoss

    animator = Animator.from_checkpoint(make_checkpoint(tmp_path), pm=make_pm())
    loss = ContentLoss(animator.pm, animator.cfg.loss)
    assert loss.nets
    calls = []
    targets = loss.targets
    loss.targets = lambda real, points=None: calls.append(len(real)) or targets(real, points)

    class EveryStep:  # the same loss without targets(): the real frames run at every step
        def __call__(self, fake, real, points=None):
            return loss(fake, real, points=points)

    for frames in ([astronaut], [astronaut, astronaut[:, ::-1].copy()]):
        person = animator.prepare_source(frames, detector=TwoFaces())
        calls.clear()
        cached = animator.fine_tune(person, 3, content_loss=loss, seed=0)
        assert sum(calls) == len(frames)                  # once for each of the T frames
        calls.clear()
        again = animator.fine_tune(person, 3, content_loss=EveryStep(), seed=0)
        assert len(calls) == 3                            # at every step
        pairs = [(cached.psi, again.psi), (cached.w, again.w)] + list(
            zip(cached.generator.parameters(), again.generator.parameters()))
        for a, b in pairs:
            if len(frames) == 1:
                assert torch.equal(a, b)
            else:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(finetune, "TARGETS_MAX_BYTES", 0)
    calls.clear()
    capped = animator.fine_tune(person, 3, content_loss=loss, seed=0)
    assert calls == [1] + [len(frames)] * 3               # the first frame measured, then every step
    torch.testing.assert_close(capped.psi, cached.psi, rtol=1e-4, atol=1e-5)


def test_fine_tune_cli_writes_a_person_that_animate_takes(tmp_path, astronaut):
    from headpuppet.cli import build_app
    from headpuppet.media.imaging import write_image
    from headpuppet.fewshot.person import is_person_dir
    from headpuppet.media.video import VideoWriter, probe

    torch.set_num_threads(1)
    pm = make_pm()
    ckpt = make_checkpoint(tmp_path, detector="two-faces")
    write_image(tmp_path / "a.png", astronaut)
    app = build_app(pm)
    runner = CliRunner()
    person = tmp_path / "person"
    res = runner.invoke(app, ["fine-tune", str(ckpt), str(tmp_path / "a.png"), "--out", str(person),
                              "--steps", "2", "--device", "cpu"])
    out = strip_ansi(res.output)
    assert res.exit_code == 0, out
    assert is_person_dir(person) and (person / "generator.safetensors").exists()
    assert "2 steps" in out
    # drive it with a tiny synthetic driver the fake detector sees a face in
    driver = tmp_path / "drv.mp4"
    with VideoWriter(driver, 10) as w:
        for i in range(6):
            w.write(np.full((48, 48, 3), 100 + 10 * i, np.uint8))
    res = runner.invoke(app, ["animate", str(person), str(driver), "-o", str(tmp_path / "o.mp4"), "--device", "cpu"])
    assert res.exit_code == 0, strip_ansi(res.output)
    info = probe(tmp_path / "o.mp4")
    assert info.num_frames == 6 and info.fps == pytest.approx(10)
    # fine-tuning inside animate
    res = runner.invoke(app, ["animate", str(tmp_path / "a.png"), str(driver), "-o", str(tmp_path / "f.mp4"),
                              "-c", str(ckpt), "--finetune-steps", "2", "--device", "cpu"])
    assert res.exit_code == 0, strip_ansi(res.output)
    assert probe(tmp_path / "f.mp4").num_frames == 6
    assert "2 faces in the source a.png; the largest was used" in strip_ansi(res.output)
    # the source of a person folder carries its photo: paste-back works too
    res = runner.invoke(app, ["animate", str(person), str(driver), "-o", str(tmp_path / "p.mp4"), "--paste-back"])
    assert res.exit_code == 0, strip_ansi(res.output)
    assert probe(tmp_path / "p.mp4").width == astronaut.shape[1]


def test_fine_tune_cli_errors(tmp_path, astronaut):
    from headpuppet.cli import build_app

    runner = CliRunner()
    app = build_app(make_pm())
    res = runner.invoke(app, ["fine-tune", str(tmp_path / "nope"), str(tmp_path / "a.png"), "--out", str(tmp_path / "p")])
    assert res.exit_code != 0 and "no checkpoint at" in strip_ansi(res.output)
    (tmp_path / "f").write_text("x")
    res = runner.invoke(app, ["fine-tune", str(tmp_path), str(tmp_path / "a.png"), "--out", str(tmp_path / "f")])
    assert res.exit_code != 0 and "is a file" in strip_ansi(res.output)


def test_fine_tuning_with_a_seed_gives_the_same_weights_in_every_run(tmp_path):
    """Two `headpuppet fine-tune` runs of the same photo on two threads write the same weights, bit
    for bit: MKL picks code paths by memory alignment, which differs between runs, unless MKL_CBWR
    (which the CLI sets) says otherwise; without it the weights differed in most tries."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    photo = shared_file("photos/fr_obama.jpg")
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "OMP_NUM_THREADS")}
    weights = []
    for run in ("a", "b"):
        out = tmp_path / run
        subprocess.run([sys.executable, "-m", "headpuppet", "fine-tune", "weights/demo", str(photo), "--out", str(out),
                        "--steps", "3", "--device", "cpu"], check=True, capture_output=True, env=env,
                       cwd=Path(__file__).resolve().parents[1])
        weights.append(load_file(out / "generator.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
