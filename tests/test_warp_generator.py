"""The warp-guided generator (headpuppet.models.warp_generator) and its torch thin-plate spline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headpuppet.evaluation.baselines import nearest_shot as np_nearest_shot
from headpuppet.evaluation.baselines import tps_warp as np_tps_warp
from headpuppet.config import ModelConfig
from headpuppet.media.imaging import to_tensor, to_uint8
from headpuppet.models import WarpGenerator, build_networks
from headpuppet.models.tps import nearest_shot, tps_warp
from headpuppet.models.warp_generator import MASK_BIAS, source_kwargs

torch.set_num_threads(1)

S = 32


def tiny(**kw) -> ModelConfig:
    base = dict(image_size=S, ch=8, max_ch=32, emb_dim=16, gen_bottleneck=8, gen_res_blocks=1,
                attention_down=[16], attention_up=[16], spectral_norm=True, generator="warp", projection_sn=False)
    base.update(kw)
    return ModelConfig(**base)


def face_points(rng, size: float, jitter: float = 0.0) -> np.ndarray:
    """68 points on an ellipse in the middle of a ``size`` image (a stand-in face), jittered."""
    ang = np.linspace(0, 2 * np.pi, 69)[:-1]
    pts = np.stack([np.cos(ang) * 0.25, np.sin(ang) * 0.3], 1) * size + size / 2
    return (pts + rng.normal(0, jitter, pts.shape)).astype(np.float32)


def source_batch(b=2, k=3, size=S, seed=0):
    rng = np.random.default_rng(seed)
    shots = torch.rand(b, k, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    shot_points = torch.from_numpy(np.stack([[face_points(rng, size, 1.0) for _ in range(k)] for _ in range(b)]))
    target_points = torch.from_numpy(np.stack([face_points(rng, size, 1.0) for _ in range(b)]))
    return shots, shot_points, target_points


def test_torch_tps_matches_the_warp_baseline(astronaut):
    """The batched torch spline moves pixels exactly as the numpy/OpenCV ``warp`` baseline does."""
    import cv2

    rng = np.random.default_rng(0)
    img = cv2.resize(astronaut[:256, 128:384], (128, 128), interpolation=cv2.INTER_AREA)
    src = face_points(rng, 128, 0.5)
    dst = src + rng.normal(0, 3, src.shape).astype(np.float32) + [4, -2]
    ref = np_tps_warp(img, src, dst)
    warped, valid = tps_warp(to_tensor(img[None]), torch.from_numpy(src[None]), torch.from_numpy(dst[None]))
    diff = np.abs(to_uint8(warped)[0].astype(int) - ref.astype(int))
    assert diff.max() <= 3 and diff.mean() < 0.2, (diff.max(), diff.mean())  # rounding, not geometry
    assert valid.shape == (1, 1, 128, 128) and 0.9 < valid.mean() <= 1


def test_tps_grid_in_float32_stays_within_a_fiftieth_of_a_pixel_of_float64():
    """The spline is solved in float64 and evaluated in float32 (13x faster); against an all-float64
    evaluation it moves no pixel by more than 0.02 px, also under bf16 autocast (which it turns off)."""
    from headpuppet.models.tps import _anchors, _kernel, tps_sample_grid

    def grid64(src, dst, size, reg=1e-3, nodes=64):
        b, dev = src.shape[0], src.device
        anchors = _anchors(size, dev, torch.float64).expand(b, -1, -1)
        d = torch.cat([dst.double(), anchors], 1) / size
        s_ = torch.cat([src.double(), anchors], 1) / size
        n = d.shape[1]
        K = _kernel(((d[:, :, None] - d[:, None]) ** 2).sum(-1)) + reg * torch.eye(n, dtype=torch.float64)
        P = torch.cat([torch.ones(b, n, 1, dtype=torch.float64), d], 2)
        L = torch.zeros(b, n + 3, n + 3, dtype=torch.float64)
        L[:, :n, :n], L[:, :n, n:], L[:, n:, :n] = K, P, P.transpose(1, 2)
        rhs = torch.zeros(b, n + 3, 2, dtype=torch.float64)
        rhs[:, :n] = s_
        coef = torch.linalg.solve(L, rhs)
        lin = torch.linspace(0, size - 1, nodes, dtype=torch.float64)
        ys, xs = torch.meshgrid(lin, lin, indexing="ij")
        g = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)[None] / size
        U = _kernel(((g[:, :, None] - d[:, None]) ** 2).sum(-1))
        return (U @ coef[:, :n] + coef[:, n:n + 1] + g @ coef[:, n + 1:]) * size  # (B, nodes^2, 2) px

    for size, motion in ((128, 3.0), (128, 15.0), (256, 5.0)):
        rng = np.random.default_rng(int(motion))
        src = torch.from_numpy(np.stack([face_points(rng, size, 0.5) for _ in range(3)]))
        dst = src + torch.from_numpy(rng.normal(0, motion, src.shape).astype(np.float32))
        ref = grid64(src, dst, size).reshape(3, 64, 64, 2).permute(0, 3, 1, 2)
        ref = torch.nn.functional.interpolate(ref, size=(size, size), mode="bilinear", align_corners=True)
        for autocast in (False, True):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                grid = tps_sample_grid(src, dst, size)  # (B, size, size, 2) in [-1, 1]
            px = (grid.double() + 1) / 2 * (size - 1)
            err = (px - ref.permute(0, 2, 3, 1)).abs().max().item()
            assert err < 0.02, (size, motion, autocast, err)


def test_tps_identity_and_gradients():
    img = torch.rand(2, 3, S, S, requires_grad=True)
    pts = torch.from_numpy(np.stack([face_points(np.random.default_rng(i), S) for i in range(2)]))
    warped, valid = tps_warp(img, pts, pts)
    torch.testing.assert_close(warped, img, atol=1e-4, rtol=0)  # landmarks already in place: no motion
    assert valid.min() == 1
    shifted, valid = tps_warp(img, pts, pts + 3)
    shifted.sum().backward()
    assert img.grad is not None and img.grad.abs().sum() > 0
    # the corners are pinned (anchors, up to the regulariser); between anchors the border may bulge out
    assert (valid[:, :, [0, 0, -1, -1], [0, -1, 0, -1]] > 0.99).all() and valid.min() < 1
    assert torch.isfinite(shifted).all()


def test_nearest_shot_matches_the_baseline_and_honours_allowed():
    shots, shot_points, target_points = source_batch(b=4, k=5)
    ours = nearest_shot(shot_points, target_points)
    ref = [int(np_nearest_shot(shot_points[i].numpy(), target_points[i:i + 1].numpy())[0]) for i in range(4)]
    assert ours.tolist() == ref
    allowed = torch.ones(4, 5, dtype=torch.bool)
    allowed[torch.arange(4), ours] = False
    other = nearest_shot(shot_points, target_points, allowed)
    assert (other != ours).all()
    # the target's own frame among the shots is always nearest (distance 0) unless excluded
    shot_points[:, 2] = target_points
    assert nearest_shot(shot_points, target_points).tolist() == [2, 2, 2, 2]


def test_warp_generator_starts_as_the_warp_and_trains_every_parameter():
    torch.manual_seed(0)
    G = WarpGenerator(tiny()).eval()  # eval: spectral norm's power iteration would move weights between calls
    shots, shot_points, target_points = source_batch()
    y = torch.rand(2, 3, S, S) * 2 - 1
    e = torch.rand(2, 16)
    parts = G(y, e=e, shots=shots, shot_points=shot_points, target_points=target_points, return_parts=True)
    assert parts["image"].shape == (2, 3, S, S) and torch.isfinite(parts["image"]).all()
    # a fresh model mostly passes the warp through (mask bias +2 -> ~0.88 where the warp is valid)
    assert abs(float(parts["mask"].mean()) - torch.sigmoid(torch.tensor(MASK_BIAS)).item()) < 0.1
    warped, _ = G.warp_source(shots, shot_points, target_points)
    torch.testing.assert_close(parts["warped"], warped)
    # e reaches the output unnormalised (projection_sn: false) and psi gives the same frames
    torch.testing.assert_close(G(y, psi=G.project(e), shots=shots, shot_points=shot_points,
                                 target_points=target_points), parts["image"])
    with pytest.raises(ValueError, match="needs shots"):
        G(y, e=e)
    # gradients reach every parameter (attention gates opened so their convs get gradient too)
    G.train()
    for m in G.modules():
        if hasattr(m, "gamma"):
            torch.nn.init.constant_(m.gamma, 0.5)
    G(y, e=e, shots=shots, shot_points=shot_points, target_points=target_points).square().mean().backward()
    missing = [n for n, p in G.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_build_networks_and_source_kwargs_from_an_episode_batch(tmp_path):
    from headpuppet.config import Config
    from headpuppet.training.steps import generate

    cfg = Config()
    cfg.model = tiny()
    nets = build_networks(cfg, 3)
    assert isinstance(nets.generator, WarpGenerator)
    shots, shot_points, target_points = source_batch()
    batch = {"shots": shots, "shot_landmarks": shots.clone(), "target_landmarks": torch.zeros(2, 3, S, S),
             "shot_points": shot_points, "target_points": target_points}
    assert set(source_kwargs(nets.generator, batch)) == {"shots", "shot_points", "target_points"}
    fake, e = generate(nets, batch)
    assert fake.shape == (2, 3, S, S) and e.shape == (2, 16)
    cfg.model = tiny(generator="paper")
    assert source_kwargs(build_networks(cfg, 3).generator, batch) == {}
    cfg.model = tiny(generator="nope")
    from headpuppet.errors import ConfigError

    with pytest.raises(ConfigError, match="model.generator"):
        build_networks(cfg, 3)


def test_episodes_carry_landmarks_in_crop_pixels(tmp_path):
    from headpuppet.data.episodes import EpisodeDataset
    from headpuppet.data.format import open_dataset
    from headpuppet.testing import make_dataset

    root = make_dataset(tmp_path / "data", size=32)
    ds = EpisodeDataset(open_dataset(root), k_shots=2, size=16)
    item = ds[0]
    assert item["shot_points"].shape == (2, 68, 2) and item["target_points"].shape == (68, 2)
    rec = ds.videos[0]
    np.testing.assert_allclose(item["target_points"].numpy(),
                               np.asarray(rec.landmarks[int(item["frame_idx"][0])]) * 0.5, rtol=1e-6)


def test_warp_model_renders_and_fine_tunes(tmp_path, astronaut):
    """Animator.render and fine-tuning feed the source shots to a warp-guided checkpoint."""
    from headpuppet.fewshot.animator import Animator
    from headpuppet.testing import TwoFaces, make_checkpoint, make_pm

    ckpt = make_checkpoint(tmp_path, generator="warp", projection_sn=False)
    animator = Animator.from_checkpoint(ckpt, pm=make_pm())
    person = animator.prepare_source([astronaut, astronaut[:, ::-1].copy()], detector=TwoFaces())
    out = animator.render(person, person.points)
    assert out.shape == (2, animator.size, animator.size, 3)
    tuned = animator.fine_tune(person, 2, preview_dir=tmp_path / "prev", preview_every=1)
    assert tuned.finetune_steps == 2 and len(list((tmp_path / "prev").glob("*.png"))) == 2
    assert animator.render(tuned, person.points).shape == out.shape


def test_meta_train_a_warp_model_and_its_sample_grid_shows_warp_and_mask(tmp_path):
    from headpuppet.media.imaging import read_image
    from headpuppet.training import meta_train
    from headpuppet.training.plots import _GAP
    from headpuppet.testing import make_dataset, tiny_config

    data = make_dataset(tmp_path / "data")
    cfg = tiny_config(steps=2, sample_every=2)
    cfg.model.generator, cfg.model.projection_sn = "warp", False
    run = meta_train(cfg, data, out_root=tmp_path / "runs", device="cpu")
    grid = read_image(run / "samples" / "step-0000002.png")
    S, K = cfg.model.image_size, cfg.train.k_shots
    cols = K + 3 + 2  # shots | landmarks | generated | real | warped | mask
    assert grid.shape[1] == cols * S + (cols - 1) * _GAP


@pytest.mark.parametrize("generator", ["paper", "warp"])
def test_the_fast_render_path_matches_the_plain_one(tmp_path, astronaut, generator):
    """Folded spectral norm + channels-last + inference mode give the plain path's frames; bf16 stays
    within a few levels."""
    from headpuppet.fewshot.animator import Animator, fold_spectral_norm, resolve_precision
    from headpuppet.models.blocks import has_spectral_norm
    from headpuppet.testing import TwoFaces, make_checkpoint, make_pm

    ckpt = make_checkpoint(tmp_path, generator=generator, projection_sn=False)
    animator = Animator.from_checkpoint(ckpt, pm=make_pm(), precision="fp32")
    person = animator.prepare_source([astronaut, astronaut[:, ::-1].copy()], detector=TwoFaces())
    pts = person.points + np.float32(1.5)
    plain = animator.render(person, pts, fast=False).astype(int)
    fast = animator.render(person, pts).astype(int)  # folded, channels-last
    assert np.abs(fast - plain).max() <= 1  # float rounding of W / sigma, not a different function
    contiguous = animator.render(person, pts, channels_last=False).astype(int)
    assert np.abs(contiguous - plain).max() <= 1
    folded = fold_spectral_norm(animator.generator)
    assert not any(has_spectral_norm(m) for m in folded.modules()) and any(
        has_spectral_norm(m) for m in animator.generator.modules())
    assert animator._folded(animator.generator) is animator._folded(animator.generator)  # cached
    bf16 = animator.render(person, pts, amp="bf16").astype(int)
    assert np.abs(bf16 - plain).mean() < 4 and np.abs(bf16 - plain).max() < 64
    # bf16 renders with a folded copy whose conv weights are stored in bf16 (autocast's own cast, once)
    convs = [m for m in animator._folded(animator.generator, True).modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert all(m.weight.dtype == torch.float32 for m in animator._folded(animator.generator).modules()
               if isinstance(m, torch.nn.Conv2d))
    # the eager fold renders in channels-last: its down-sampling convs pool as they go, and its
    # weights are prepacked for oneDNN where this torch and processor run that
    from headpuppet.models import blocks
    eager = animator._folded(animator.generator, False, True)
    assert any(isinstance(m, blocks.ResBlockDown) and m.conv2.stride == (2, 2) for m in eager.modules())
    assert any(isinstance(m, blocks.PackedConv2d) for m in eager.modules()) == blocks._packing_works(torch.float32)
    # fine-tuning changes the weights in place: the folded copy follows
    with torch.no_grad():
        animator.generator.out_conv.bias.add_(0.5)  # the last layer: no norm after it
    assert np.abs(animator.render(person, pts).astype(int) - fast).max() > 0
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("auto", "cpu") in ("fp32", "bf16")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", "cpu")


def test_random_warp_source_allows_one_shot_deterministically(tmp_path):
    from headpuppet.data.episodes import EpisodeDataset
    from headpuppet.data.format import open_dataset
    from headpuppet.errors import ConfigError
    from headpuppet.testing import make_dataset

    index = open_dataset(make_dataset(tmp_path / "data", size=32))
    assert "shot_allowed" not in EpisodeDataset(index, k_shots=3)[0]
    ds = EpisodeDataset(index, k_shots=3, warp_source="random")
    picks = [ds[(0, v, r)]["shot_allowed"] for v in range(3) for r in range(4)]
    assert all(p.dtype == torch.bool and p.shape == (3,) and int(p.sum()) == 1 for p in picks)
    assert len({int(p.nonzero()) for p in picks}) > 1                      # not always the same shot
    assert torch.equal(ds[(0, 1, 2)]["shot_allowed"], ds[(0, 1, 2)]["shot_allowed"])  # a pure function of the key
    with pytest.raises(ConfigError, match="warp_source"):
        EpisodeDataset(index, k_shots=3, warp_source="farthest")


def test_generated_l1_and_ssim_terms_show_in_the_stats(tmp_path):
    """loss.generated_l1 adds a term on G's own drawing (before the blend) and loss.ssim one on the
    output's structure; each shows in the stats when its weight is set, and not otherwise."""
    import json

    from headpuppet.training import meta_train
    from headpuppet.testing import make_dataset, tiny_config

    data = make_dataset(tmp_path / "data")
    cfg = tiny_config(steps=2)
    cfg.model.generator, cfg.model.projection_sn = "warp", False
    cfg.loss.generated_l1, cfg.loss.ssim = 5.0, 3.0
    run = meta_train(cfg, data, out_root=tmp_path / "runs", device="cpu")
    rec = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert rec["Loss/G/generated_l1"] > 0
    assert 0 < rec["Loss/G/ssim"] <= 3.0 * 2  # 1 - SSIM lies in [0, 2]
    cfg.loss.generated_l1, cfg.loss.ssim = 0.0, 0.0
    run = meta_train(cfg, data, out_root=tmp_path / "runs", device="cpu")
    rec = json.loads((run / "stats.jsonl").read_text().splitlines()[-1])
    assert "Loss/G/generated_l1" not in rec and "Loss/G/ssim" not in rec


def test_mirrored_episodes_are_the_mirror_of_plain_ones(tmp_path, astronaut):
    """train.flip mirrors whole episodes: images flipped, landmarks moved to x -> S - x and renumbered
    so each part keeps its meaning (the mirrored right eye is still points 36-41, drawn in the right
    eye's colour), deterministic per episode key; about the asked share of episodes is mirrored."""
    from headpuppet.data.episodes import EpisodeDataset
    from headpuppet.data.format import open_dataset
    from headpuppet.errors import ConfigError
    from headpuppet.media.landmarks import MIRROR, mirror_points, rasterise
    from headpuppet.testing import make_dataset

    assert sorted(MIRROR) == list(range(68)) and all(MIRROR[MIRROR[i]] == i for i in range(68))
    index = open_dataset(make_dataset(tmp_path / "data", size=32))
    plain, always = EpisodeDataset(index, k_shots=2), EpisodeDataset(index, k_shots=2, flip=1.0)
    a, b = plain[(0, 1, 0)], always[(0, 1, 0)]
    assert torch.equal(b["target"], a["target"].flip(-1)) and torch.equal(b["shots"], a["shots"].flip(-1))
    pts = a["target_points"].numpy()
    assert np.allclose(b["target_points"].numpy(), mirror_points(pts, 32))
    # the mirrored right eye (36-41) lies where the plain left eye (42-47) was, reflected
    assert np.allclose(b["target_points"][36:42, 0].numpy(), 32 - pts[[45, 44, 43, 42, 47, 46], 0])
    side = lambda p: bool(p[36:42, 0].mean() < p[42:48, 0].mean())  # noqa: E731 - right eye on the image's left?
    assert side(b["target_points"].numpy()) == side(pts)  # each eye keeps its side of the face
    assert torch.equal(b["target_landmarks"], always[(0, 1, 0)]["target_landmarks"])  # deterministic
    drawn = rasterise(mirror_points(pts, 32), 32)
    assert np.array_equal((b["target_landmarks"].permute(1, 2, 0).numpy() * 127.5 + 127.5).round().astype(np.uint8),
                          drawn)
    half = EpisodeDataset(index, k_shots=2, flip=0.5)
    flips = [not torch.equal(half[(0, v, r)]["target"], plain[(0, v, r)]["target"]) for v in range(3) for r in range(20)]
    assert 0.25 < np.mean(flips) < 0.75
    with pytest.raises(ConfigError, match="flip"):
        EpisodeDataset(index, k_shots=2, flip=1.5)


def _compile_setup(tmp_path, astronaut, generator="warp"):
    from headpuppet.fewshot.animator import Animator
    from headpuppet.testing import TwoFaces, make_checkpoint, make_pm

    ckpt = make_checkpoint(tmp_path, generator=generator, projection_sn=False)
    animator = Animator.from_checkpoint(ckpt, pm=make_pm(), precision="fp32")
    person = animator.prepare_source([astronaut, astronaut[:, ::-1].copy()], detector=TwoFaces())
    pts = np.concatenate([person.points + np.float32(d) for d in (0.5, 1.0, 1.5, 2.0, 2.5)])  # 10 frames
    return animator, person, pts


def test_compiled_render_pads_to_one_shape_and_falls_back_when_compiling_fails(tmp_path, astronaut, monkeypatch, caplog):
    """render(compile=True) hands the compiled G chunks of one shape only (the last one padded, its
    padding dropped), with inductor's freezing on, and, where compiling fails, logs why on one line
    and renders eagerly, for good."""
    import logging

    import headpuppet.fewshot.animator as animator_module
    from headpuppet.models.blocks import PackedConv2d, UpsampleConv

    animator, person, pts = _compile_setup(tmp_path, astronaut)
    eager = animator.render(person, pts, batch_size=4)
    shapes, made = [], []
    monkeypatch.setattr(animator_module, "_no_cpp_compiler", lambda: None)  # whatever this machine has

    def fake_compile(module, **kw):  # a stand-in compiler: runs the module, records the batch shapes
        made.append(kw)
        # inductor gets the up-sampling convs as they are (its kernels for them beat UpsampleConv's)
        # and plain weights (it packs its own)
        assert not any(isinstance(m, (UpsampleConv, PackedConv2d)) for m in module.modules())

        def run(y, **src):
            shapes.append(tuple(y.shape))
            freezing.append(inductor_config.freezing)
            return module(y, **src)
        return run

    import torch._inductor.config as inductor_config
    freezing, before = [], inductor_config.freezing
    monkeypatch.setattr(torch, "compile", fake_compile)
    out = animator.render(person, pts, batch_size=4, compile=True)
    assert any(isinstance(m, UpsampleConv) for m in animator._folded(animator.generator).modules())
    assert out.shape == eager.shape and np.abs(out.astype(int) - eager).max() <= 1  # float rounding
    assert shapes == [(4, 3, 32, 32)] * 3                       # 4 + 4 + 2 padded to 4
    assert made == [{"dynamic": False}]
    # every call (the trace included) sees inductor's freezing on: TorchDynamo reads it as it traces
    # (compile's options reach inductor only afterwards); outside the calls it is as it was
    assert freezing == [True] * 3 and inductor_config.freezing == before
    animator.render(person, pts[:3], batch_size=4, compile=True)
    assert len(made) == 1                                        # made once per folded G

    def broken_compile(module, **kw):
        def run(y, **src):
            raise RuntimeError("C++ compile error: g++ not found\nmore detail")
        return run

    animator._compile_cache.clear()
    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="headpuppet.fewshot.animator"):
        out = animator.render(person, pts, batch_size=4, compile=True)
    assert np.abs(out.astype(int) - eager).max() <= 1  # the compile's own fold, eagerly: float rounding
    warnings = [r.getMessage() for r in caplog.records if r.name == "headpuppet.fewshot.animator"]
    assert len(warnings) == 1 and "g++ not found" in warnings[0] and "\n" not in warnings[0]
    assert np.array_equal(animator.render(person, pts, batch_size=4, compile=True), eager)  # then the eager fold
    assert animator._compile_cache[(False, True)].fn is None     # eager from now on, no retry per chunk

    # no C++ compiler at all: said at once, before any tracing (torch.compile is not even called)
    animator._compile_cache.clear()
    animator._fold_cache.clear()
    made.clear()
    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(animator_module, "_no_cpp_compiler",
                        lambda: "InvalidCxxCompiler: No working C++ compiler found")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="headpuppet.fewshot.animator"):
        out = animator.render(person, pts, batch_size=4, compile=True)
    assert np.array_equal(out, eager) and made == []
    warnings = [r.getMessage() for r in caplog.records if r.name == "headpuppet.fewshot.animator"]
    assert len(warnings) == 1 and "No working C++ compiler" in warnings[0]
    # and no fold made for a compile that cannot happen (only the eager one, which renders)
    assert animator._compile_cache[(False, True)].folded is None
    assert [k[3] for k in animator._fold_cache] == [False]          # for_compile: only the eager fold
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="headpuppet.fewshot.animator"):
        assert np.array_equal(animator.render(person, pts, batch_size=4, compile=True), eager)
    assert not caplog.records                                    # said once


def test_no_cpp_compiler_reads_inductors_own_check():
    """The pre-check names a compiler that is not there (inductor's cpp.cxx, which it reads from CXX
    when it is imported), and is quiet where there is one. The setting is changed through inductor's
    own ``config.patch`` (pytest's monkeypatch left ``cpp.cxx`` deleted from inductor's config on undo,
    and every later compile in the process failed)."""
    import shutil

    from torch._inductor import config as inductor_config
    from torch._inductor.cpp_builder import cpp_compiler_search

    from headpuppet.fewshot.animator import _no_cpp_compiler

    try:
        with inductor_config.patch({"cpp.cxx": (None, "/nonexistent/g++")}):
            cpp_compiler_search.cache_clear()
            assert "C++ compiler" in (_no_cpp_compiler() or "")
        if shutil.which("g++"):
            with inductor_config.patch({"cpp.cxx": (None, shutil.which("g++"))}):
                cpp_compiler_search.cache_clear()
                assert _no_cpp_compiler() is None
    finally:
        cpp_compiler_search.cache_clear()  # the search's answer for the real setting, not the test's
    assert hasattr(inductor_config.cpp, "cxx")


@pytest.mark.slow
def test_compile_frozen_packs_the_weights_once():
    """The real inductor compile of :func:`compile_frozen` holds the weights as constants: its convolutions
    run on weights packed for oneDNN at compile time (``mkldnn::_convolution_pointwise``), not on
    weights reordered at every call (``aten::mkldnn_convolution``, what ``options={"freezing": True}``
    alone gave), with the eager module's numbers; inductor's setting is as it was afterwards."""
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity, profile

    from headpuppet.fewshot.animator import _no_cpp_compiler, compile_frozen

    if not torch.backends.mkldnn.is_available() or _no_cpp_compiler():
        pytest.skip("needs oneDNN and a C++ compiler for inductor")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 8, 3, padding=1)).eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    before = inductor_config.freezing
    fn = compile_frozen(net)
    with torch.inference_mode():
        want = net(x)
        fn(x)  # the compile
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            got = fn(x)
    ops = {e.key for e in prof.key_averages()}
    assert "mkldnn::_convolution_pointwise" in ops and "aten::mkldnn_convolution" not in ops, sorted(ops)
    assert torch.allclose(got, want, atol=1e-4)
    assert inductor_config.freezing == before


@pytest.mark.slow
@pytest.mark.parametrize("generator", ["paper", "warp"])
def test_torch_compile_render_matches_the_eager_fast_path(tmp_path, astronaut, generator):
    """The real inductor compile (a C++ compiler is needed; a minute or more on 2 cores) gives the plain
    fp32 path's frames: within float rounding in fp32, within the bf16 fast path's own tolerance
    (the test above) in bf16."""
    animator, person, pts = _compile_setup(tmp_path, astronaut, generator)
    plain = animator.render(person, pts, batch_size=4, amp="fp32", fast=False).astype(int)
    for amp in ("fp32", "bf16"):
        compiled = animator.render(person, pts, batch_size=4, amp=amp, compile=True).astype(int)
        assert animator._compile_cache[(amp == "bf16", True)].ok  # it compiled, no fallback
        d = np.abs(compiled - plain)
        if amp == "fp32":
            assert d.max() <= 2
        else:
            assert d.mean() < 4 and d.max() < 64
