"""The networks of headpuppet.models and the discriminator plugins, on tiny configs (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from headpuppet.config import Config, ModelConfig, load_config
from headpuppet.errors import ConfigError
from headpuppet.models import (Embedder, Generator, MultiScaleDiscriminator, Networks, ProjectionDiscriminator,
                               build_networks, count_parameters)
from headpuppet.models.blocks import AdaIN, ResBlockDown, SelfAttention, has_spectral_norm
from headpuppet.plugins import make_plugin_manager, registry

torch.set_num_threads(1)

B, K, S = 2, 2, 32


def tiny(**kw) -> ModelConfig:
    base = dict(image_size=S, ch=8, max_ch=32, emb_dim=16, gen_bottleneck=8, gen_res_blocks=2,
                attention_down=[16], attention_up=[16], spectral_norm=True, disc_scales=2)
    base.update(kw)
    return ModelConfig(**base)


def images(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 2 - 1


def open_attention(module: nn.Module, value: float = 0.5) -> None:
    """SAGAN's gamma starts at 0, which zeroes the gradient of the attention convs; open it."""
    for m in module.modules():
        if isinstance(m, SelfAttention):
            nn.init.constant_(m.gamma, value)


def test_embedder_shapes_and_mean():
    torch.manual_seed(0)
    E = Embedder(tiny()).eval()  # eval: spectral norm's power iteration would move the weights between calls
    x, y = images(B, K, 3, S, S), images(B, K, 3, S, S, seed=1)
    e, e_k = E(x, y)
    assert e.shape == (B, 16) and e_k.shape == (B, K, 16)
    assert torch.isfinite(e).all() and (e_k >= 0).all()  # ReLU after sum pooling
    torch.testing.assert_close(e, e_k.mean(1))
    # each shot is embedded independently of the others
    torch.testing.assert_close(E.embed(x[:, 1], y[:, 1]), e_k[:, 1])
    assert any(isinstance(m, SelfAttention) for m in E.modules())


def test_generator_shapes_range_and_e_psi():
    torch.manual_seed(0)
    G = Generator(tiny()).eval()
    y = images(B, 3, S, S)
    e = torch.rand(B, 16)
    out = G(y, e=e)
    assert out.shape == (B, 3, S, S) and torch.isfinite(out).all()
    assert out.min() >= -1 and out.max() <= 1
    torch.testing.assert_close(G(y, psi=G.project(e)), out)
    with pytest.raises(ValueError):
        G(y)
    with pytest.raises(ValueError):
        G(y, e=e, psi=G.project(e))
    with pytest.raises(ValueError):
        G(y, psi=torch.zeros(B, G.psi_dim + 1))


def test_psi_dim_counts_every_adain_layer():
    G = Generator(tiny())
    adains = [m for m in G.modules() if isinstance(m, AdaIN)]
    assert G.psi_dim == sum(2 * m.channels for m in adains)
    assert G.project(torch.zeros(1, 16)).shape == (1, G.psi_dim)


def test_adain_parameters_change_the_output():
    torch.manual_seed(0)
    G = Generator(tiny()).eval()
    y = images(1, 3, S, S)
    psi = G.project(torch.rand(1, 16))
    base = G(y, psi=psi)
    assert not torch.allclose(base, G(y, psi=psi + 0.5 * torch.randn_like(psi)), atol=1e-4)
    # every AdaIN layer is wired to its own slice: perturbing any one slice changes the image
    offset = 0
    for m in [m for m in G.modules() if isinstance(m, AdaIN)]:
        p = psi.clone()
        p[:, offset:offset + 2 * m.channels] += 1.0
        assert not torch.allclose(base, G(y, psi=p), atol=1e-5), f"AdaIN at offset {offset} has no effect"
        offset += 2 * m.channels
    # different embeddings -> different people
    assert not torch.allclose(G(y, e=torch.rand(1, 16)), G(y, e=torch.rand(1, 16) + 1.0), atol=1e-4)


def test_discriminator_shapes_and_features():
    torch.manual_seed(0)
    D = ProjectionDiscriminator(tiny(), num_videos=5)
    x, y = images(B, 3, S, S), images(B, 3, S, S, seed=1)
    score, feats = D(x, y, video_idx=torch.tensor([0, 3]))
    assert score.shape == (B,) and torch.isfinite(score).all()
    # 32 -> 16 -> 8 -> 4 plus the extra block at 4x4: one activation per residual block
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 4]
    assert feats[-1].shape[1] == 16
    assert D.W.shape == (5, 16) and D.w0.shape == (16,) and D.b.shape == (1,)
    with pytest.raises(ValueError):
        D(x, y)


def test_projection_uses_the_right_column_of_W():
    torch.manual_seed(0)
    D = ProjectionDiscriminator(tiny(), num_videos=4).eval()
    x, y = images(3, 3, S, S), images(3, 3, S, S, seed=1)
    idx = torch.tensor([1, 2, 1])
    before, _ = D(x, y, video_idx=idx)
    with torch.no_grad():
        D.W[2] += 1.0
    after, _ = D(x, y, video_idx=idx)
    changed = ~torch.isclose(before, after)
    assert changed.tolist() == [False, True, False]
    with torch.no_grad():
        D.W[0] += 1.0  # not used by any sample
    torch.testing.assert_close(D(x, y, video_idx=idx)[0], after)


def test_w_override_replaces_W_plus_w0():
    torch.manual_seed(0)
    D = ProjectionDiscriminator(tiny(), num_videos=3).eval()
    with torch.no_grad():
        D.w0.normal_()
        D.b.fill_(0.25)
    x, y = images(B, 3, S, S), images(B, 3, S, S, seed=1)
    idx = torch.tensor([2, 0])
    by_idx, _ = D(x, y, video_idx=idx)
    by_w, _ = D(x, y, w=D.W[idx] + D.w0)
    torch.testing.assert_close(by_w, by_idx)
    w = torch.randn(B, 16)
    v, _ = D.V(x, y)
    torch.testing.assert_close(D(x, y, w=w)[0], (v * w).sum(1) + 0.25)
    with pytest.raises(ValueError):
        D(x, y, w=torch.zeros(B, 15))


def test_multiscale_shapes_and_shared_projection():
    torch.manual_seed(0)
    D = MultiScaleDiscriminator(tiny(disc_scales=2), num_videos=3).eval()
    x, y = images(B, 3, S, S), images(B, 3, S, S, seed=1)
    score, feats = D(x, y, video_idx=torch.tensor([0, 2]))
    assert score.shape == (B,) and torch.isfinite(score).all()
    # full scale 32 -> 16, 8, 4, 4; half scale 16 -> 8, 4, 4
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 4, 8, 4, 4]
    assert D.W.shape == (3, 16) and D.w0.shape == (16,) and D.b.shape == (1,)
    # the score is the mean of each scale's projection score
    proj = D.W[[0, 2]] + D.w0
    v0, _ = D.Vs[0](x, y)
    v1, _ = D.Vs[1](nn.functional.avg_pool2d(x, 2), nn.functional.avg_pool2d(y, 2))
    expected = ((v0 * proj).sum(1) + (v1 * proj).sum(1)) / 2 + D.b
    torch.testing.assert_close(score, expected)
    torch.testing.assert_close(D(x, y, w=proj)[0], score)


@pytest.mark.parametrize("disc", ["projection", "multiscale"])
def test_gradients_reach_every_parameter(disc):
    """One combined loss through E -> P -> G -> D (as meta-learning does) touches every parameter."""
    torch.manual_seed(0)
    cfg = Config(model=tiny(discriminator=disc))
    nets = build_networks(cfg, num_videos=4, pm=make_plugin_manager())
    for _, m in nets.items():
        open_attention(m)
    E, G, D = nets.embedder, nets.generator, nets.discriminator
    x_k, y_k = images(B, K, 3, S, S), images(B, K, 3, S, S, seed=1)
    x, y = images(B, 3, S, S, seed=2), images(B, 3, S, S, seed=3)
    idx = torch.tensor([1, 3])
    e, _ = E(x_k, y_k)
    fake = G(y, e=e)
    score_fake, feats_fake = D(fake, y, video_idx=idx)
    score_real, feats_real = D(x, y, video_idx=idx)
    # not -fake + real: that difference is blind to D's last bias and to b, whose gradients would cancel
    loss = (score_fake.mean() + 2 * score_real.mean()
            + sum((a - b).abs().mean() for a, b in zip(feats_fake, feats_real))
            + (e - D.W[idx]).abs().mean())
    loss.backward()
    for name, module in nets.items():
        for pname, p in module.named_parameters():
            assert p.grad is not None, f"{name}.{pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
            if pname.endswith("W"):
                continue
            assert p.grad.abs().sum() > 0, f"{name}.{pname} has an all-zero gradient"
    # P is part of the generator and is trained through psi
    assert G.projection.parametrizations.weight.original.grad.abs().sum() > 0
    # only the rows of W of the videos in the batch get a gradient
    row_has_grad = D.W.grad.abs().sum(1) > 0
    assert row_has_grad.tolist() == [False, True, False, True]


def test_spectral_norm_on_every_conv_and_linear():
    cfg = Config(model=tiny(discriminator="multiscale"))
    nets = build_networks(cfg, num_videos=2, pm=make_plugin_manager())
    layers = [(n, m) for _, net in nets.items() for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) > 20
    missing = [n for n, m in layers if not has_spectral_norm(m)]
    assert not missing, f"no spectral norm on {missing}"

    off = Config(model=tiny(spectral_norm=False))
    nets = build_networks(off, num_videos=2, pm=make_plugin_manager())
    assert not any(has_spectral_norm(m) for _, net in nets.items() for m in net.modules())


def test_generator_encoder_uses_instance_norm_embedder_and_discriminator_do_not():
    nets = build_networks(Config(model=tiny()), num_videos=2, pm=make_plugin_manager())
    assert any(isinstance(m, nn.InstanceNorm2d) for m in nets.generator.encoder.modules())
    for net in (nets.embedder, nets.discriminator):
        assert not any(isinstance(m, (nn.InstanceNorm2d, nn.BatchNorm2d, AdaIN)) for m in net.modules())


def test_registry_has_both_discriminators():
    pm = make_plugin_manager()
    reg = registry(pm, "discriminator")
    assert {"projection", "multiscale"} <= set(reg.names())
    assert isinstance(reg.create("projection", tiny(), 3), ProjectionDiscriminator)
    assert isinstance(reg.create("multiscale", tiny(), 3), MultiScaleDiscriminator)


def test_build_networks_picks_discriminator_and_rejects_bad_sizes():
    nets = build_networks(Config(model=tiny(discriminator="multiscale")), num_videos=3, pm=make_plugin_manager())
    assert isinstance(nets, Networks)
    assert isinstance(nets.discriminator, MultiScaleDiscriminator)
    assert [n for n, _ in nets.items()] == ["embedder", "generator", "discriminator"]
    from headpuppet.errors import PluginError

    with pytest.raises(PluginError, match="unknown discriminator"):
        build_networks(Config(model=tiny(discriminator="nope")), 3, pm=make_plugin_manager())
    with pytest.raises(ConfigError, match="image_size"):
        Embedder(tiny(image_size=48))
    with pytest.raises(ConfigError, match="attention_down"):
        Generator(tiny(attention_down=[64]))
    with pytest.raises(ConfigError, match="attention_up"):
        Generator(tiny(attention_up=[8]))


def test_state_dict_round_trip():
    torch.manual_seed(0)
    cfg = Config(model=tiny())
    a = build_networks(cfg, 2, pm=make_plugin_manager()).eval()
    torch.manual_seed(1)
    b = build_networks(cfg, 2, pm=make_plugin_manager()).eval()
    y = images(1, 3, S, S)
    e = torch.rand(1, 16)
    assert not torch.allclose(a.generator(y, e=e), b.generator(y, e=e))
    for (_, ma), (_, mb) in zip(a.items(), b.items()):
        mb.load_state_dict(ma.state_dict())
    torch.testing.assert_close(a.generator(y, e=e), b.generator(y, e=e))


def test_resblockdown_without_downsampling_keeps_shape():
    blk = ResBlockDown(8, 8, downsample=False)
    assert blk.shortcut is None
    assert blk(torch.randn(1, 8, 4, 4)).shape == (1, 8, 4, 4)


def test_paper_256_builds_with_the_papers_sizes():
    cfg = load_config("paper-256")
    nets = build_networks(cfg, num_videos=10, pm=make_plugin_manager())
    E, G, D = nets.embedder, nets.generator, nets.discriminator
    assert isinstance(D, ProjectionDiscriminator)
    assert D.W.shape == (10, 512)
    # section 4: E 15M, G 38M, D's convolutional part 20M parameters (rounded)
    assert round(count_parameters(E) / 1e6) == 15
    assert round(count_parameters(G) / 1e6) == 38
    assert round((count_parameters(D) - D.W.numel()) / 1e6) == 20
    # self-attention at 32x32 in G's encoder (256 channels) and at 64x64 in its decoder (128 channels)
    attn = [m for m in G.modules() if isinstance(m, SelfAttention)]
    assert sorted(m.query.in_channels for m in attn) == [128, 256]


def test_disc_pool_relu_sum_keeps_a_gradient_where_sum_relu_is_dead():
    """The paper's sum-then-ReLU gives V = 0 and no gradient once every pooled sum is negative (a
    collapsed D: the constant score seen in the CPU-trained demo models); ReLU-then-sum does not."""
    from headpuppet.models.discriminator import pool_features

    h = torch.full((2, 4, 3, 3), -1.0)
    h[:, :, 0, 0] = 2.0                       # one positive position; every channel sums to -6
    for mode, alive in (("sum-relu", False), ("relu-sum", True)):
        x = h.clone().requires_grad_(True)
        v = pool_features(x, mode)
        v.sum().backward()
        assert bool(x.grad.abs().sum() > 0) is alive, mode
        assert bool((v > 0).all()) is alive, mode
    D = ProjectionDiscriminator(tiny(disc_pool="relu-sum"), 3).eval()
    score, _ = D(images(B, 3, S, S), images(B, 3, S, S, seed=1), video_idx=torch.tensor([0, 1]))
    assert score.shape == (B,) and torch.isfinite(score).all()
    with pytest.raises(ConfigError, match="disc_pool"):
        ProjectionDiscriminator(tiny(disc_pool="max"), 3)


def test_instance_norm_keeps_channels_last_at_inference_and_is_the_same_function():
    """The render fast path's instance norm (channels-last, no autograd) equals F.instance_norm;
    under autograd it is F.instance_norm itself (its gradients)."""
    import torch.nn.functional as F

    from headpuppet.models.blocks import AdaIN, InstanceNorm, instance_norm

    torch.manual_seed(0)
    x = torch.randn(3, 16, 8, 8) * 3 + 1
    scale, bias = torch.randn(3, 16, 1, 1), torch.randn(3, 16, 1, 1)
    ref = F.instance_norm(x, eps=1e-5) * scale + bias
    cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = instance_norm(cl, 1e-5, scale, bias)
        assert out.is_contiguous(memory_format=torch.channels_last) and out.dtype == torch.float32
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
        half = instance_norm(cl.bfloat16(), 1e-5, scale, bias)
        assert half.dtype == torch.bfloat16 and half.is_contiguous(memory_format=torch.channels_last)
        assert (half.float() - ref).abs().max() < 0.1  # bf16 rounding of x and of the statistics
        norm = InstanceNorm(16, affine=True)
        with torch.no_grad():
            norm.weight.normal_()
            norm.bias.normal_()
        plain = torch.nn.InstanceNorm2d(16, affine=True)
        plain.load_state_dict(norm.state_dict())
        torch.testing.assert_close(norm(cl), plain(x), atol=1e-5, rtol=1e-5)
        assert norm(cl).is_contiguous(memory_format=torch.channels_last)
    # training: channels-last input that needs gradients takes F.instance_norm, gradients included
    a = cl.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    (AdaIN(16)(a, torch.cat([scale, bias], 1)[:, :, 0, 0]) ** 2).sum().backward()
    ((F.instance_norm(b, eps=1e-5) * scale + bias) ** 2).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_instance_norm_relu_fuses_large_bf16_samples_and_equals_the_unfused_function(monkeypatch):
    """``instance_norm(..., relu=True)``: a bf16 channels-last sample of at least
    FUSED_NORM_RELU_MIN_ELEMENTS takes the fused path (statistics, then one oneDNN pass with the
    ReLU); its result is ReLU(IN(x) * scale + bias) within two bf16 steps, per sample of a batch,
    with and without scale and bias; smaller samples, fp32 and training keep the unfused path."""
    import torch.nn.functional as F

    from headpuppet.models import blocks

    if not blocks._FUSED_NORM_RELU:
        pytest.skip("this torch has no oneDNN pointwise convolution")
    calls = []
    real = blocks._fused_norm_relu
    monkeypatch.setattr(blocks, "_fused_norm_relu", lambda x, *a: calls.append(tuple(x.shape)) or real(x, *a))
    monkeypatch.setattr(blocks, "FUSED_NORM_RELU_MIN_ELEMENTS", 8 * 32 * 32)
    torch.manual_seed(0)
    x = (torch.randn(2, 8, 32, 32) * 3 + 1).bfloat16().contiguous(memory_format=torch.channels_last)
    scale, bias = torch.rand(2, 8, 1, 1) + 0.5, torch.randn(2, 8, 1, 1)
    ref = F.relu(F.instance_norm(x.float(), eps=1e-5) * scale + bias)
    with torch.inference_mode():
        out = blocks.instance_norm(x, 1e-5, scale, bias, relu=True)
        assert calls == [(1, 8, 32, 32)] * 2
        assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
        assert (out.float() - ref).abs().max() < 0.05  # values up to ~4: a bf16 step is 1/64 there
        plain = blocks.instance_norm(x[:1], 1e-5, relu=True).float()
        torch.testing.assert_close(plain, F.relu(F.instance_norm(x[:1].float(), eps=1e-5)), atol=0.05, rtol=0)
        calls.clear()
        blocks.instance_norm(x[:, :, :16], 1e-5, scale, bias, relu=True)     # a quarter of the size
        blocks.instance_norm(x.float(), 1e-5, scale, bias, relu=True)        # fp32
        blocks.instance_norm(x, 1e-5, scale, bias)                           # no ReLU
        assert calls == []
    assert blocks._FUSED_NORM_RELU   # it ran without falling back
    a = x.float().requires_grad_(True)
    blocks.AdaIN(8)(a, torch.cat([scale, bias], 1)[:, :, 0, 0], relu=True).sum().backward()
    assert calls == [] and a.grad is not None


def test_norm_relu_keeps_the_input_of_an_identity_norm():
    from headpuppet.models.blocks import AdaIN, norm_relu

    x = torch.randn(1, 4, 3, 3)
    keep = x.clone()
    with torch.no_grad():
        assert torch.equal(norm_relu(nn.Identity(), x), keep.clamp(min=0)) and torch.equal(x, keep)
        params = torch.cat([torch.ones(1, 4), torch.zeros(1, 4)], 1)
        torch.testing.assert_close(norm_relu(AdaIN(4), x, params), torch.relu(torch.nn.functional.instance_norm(x)))


def test_avg_pool2_is_average_pooling_with_its_gradient():
    import torch.nn.functional as F

    from headpuppet.models.blocks import avg_pool2

    torch.manual_seed(0)
    for shape in ((2, 3, 8, 6), (1, 4, 5, 6), (2, 2, 7, 7)):  # even, odd H, odd both (the kernel)
        x = torch.randn(*shape, requires_grad=True)
        g = torch.randn(F.avg_pool2d(x, 2).shape)
        ours = torch.autograd.grad(avg_pool2(x), x, g)[0]
        ref = torch.autograd.grad(F.avg_pool2d(x, 2), x, g)[0]
        torch.testing.assert_close(avg_pool2(x), F.avg_pool2d(x, 2))
        torch.testing.assert_close(ours, ref)
    cl = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(avg_pool2(cl), F.avg_pool2d(cl, 2))


def test_upsample_conv_is_nearest_upsampling_then_the_3x3_conv():
    """UpsampleConv (the fast path's up-sampling conv at the low resolution) is the same map as
    F.interpolate(nearest, x2) then the 3x3 conv: every phase, the borders, with and without bias,
    non-square inputs, both memory formats, and bf16 within its rounding."""
    import torch.nn.functional as F

    from headpuppet.models.blocks import UpsampleConv

    torch.manual_seed(0)
    for bias in (True, False):
        conv3 = nn.Conv2d(5, 7, 3, padding=1, bias=bias).double()
        up = UpsampleConv(conv3)
        assert up.conv.weight.shape == (28, 5, 2, 2)
        for shape in ((2, 5, 6, 9), (1, 5, 1, 1), (1, 5, 3, 4)):
            x = torch.randn(*shape, dtype=torch.float64)
            ref = conv3(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            torch.testing.assert_close(up(x), ref, atol=1e-12, rtol=1e-12)
            cl = up(x.contiguous(memory_format=torch.channels_last))
            assert cl.is_contiguous(memory_format=torch.channels_last) or shape[2:] == (1, 1)  # 1x1: either
            torch.testing.assert_close(cl, ref, atol=1e-12, rtol=1e-12)
    conv3 = nn.Conv2d(16, 8, 3, padding=1)
    x = torch.randn(1, 16, 8, 8)
    ref = conv3(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    half = UpsampleConv(conv3).to(torch.bfloat16)(x.bfloat16()).float()
    assert (half - ref).abs().max() < 0.05 * ref.abs().max()
    with pytest.raises(ValueError, match="3x3"):
        UpsampleConv(nn.Conv2d(4, 4, 1))


def test_low_res_upsampling_swaps_plain_up_convs_and_keeps_the_generator_output():
    from headpuppet.models.blocks import ResBlockUp, UpsampleConv, low_res_upsampling

    torch.manual_seed(0)
    block = ResBlockUp(8, 4, sn=False).eval()
    x, params = torch.randn(2, 8, 5, 5), torch.randn(2, block.num_adain_params)
    with torch.no_grad():
        ref = block(x, params)
        low_res_upsampling(block)
        assert isinstance(block.conv1, UpsampleConv)
        torch.testing.assert_close(block(x, params), ref, atol=1e-5, rtol=1e-5)
    sn_block = ResBlockUp(8, 4, sn=True)
    low_res_upsampling(sn_block)  # a spectral-normalised conv (training's) stays as it is
    assert isinstance(sn_block.conv1, nn.Conv2d)


def test_conv_add_fuses_at_channels_last_inference_and_is_the_plain_sum_elsewhere():
    from headpuppet.models import blocks

    torch.manual_seed(0)
    conv3 = nn.Conv2d(8, 6, 3, padding=1).eval()
    x, other = torch.randn(2, 8, 5, 7), torch.randn(2, 6, 5, 7)
    ref = conv3(x) + other
    cl = torch.channels_last
    xc, oc = x.contiguous(memory_format=cl), other.contiguous(memory_format=cl)
    with torch.inference_mode():
        # the fast path's case: one oneDNN call (where this torch has it), the same sum
        assert blocks._fusable(conv3, xc, oc) == blocks._FUSED_CONV_ADD
        torch.testing.assert_close(blocks.conv_add(conv3, xc, oc), ref, atol=1e-5, rtol=1e-5)
        # bf16 weights and activations: within bf16 rounding
        half = nn.Conv2d(8, 6, 3, padding=1).eval()
        half.load_state_dict(conv3.state_dict())
        half.to(torch.bfloat16)
        out = blocks.conv_add(half, xc.bfloat16(), oc.bfloat16())
        assert out.dtype == torch.bfloat16 and (out.float() - ref).abs().max() < 0.1
        # not fusable: contiguous tensors, a dtype mismatch, a shape the conv does not give
        assert not blocks._fusable(conv3, x, other)
        assert not blocks._fusable(conv3, xc.bfloat16(), oc)
        assert not blocks._fusable(conv3, xc, oc[:, :, :4])
        torch.testing.assert_close(blocks.conv_add(conv3, x, other), ref)
    # training: the plain expression, with its gradients
    xg = xc.clone().requires_grad_(True)
    assert not blocks._fusable(conv3, xg, oc)
    blocks.conv_add(conv3, xg, oc).sum().backward()
    assert xg.grad is not None and conv3.weight.grad is not None


def test_relu_of_norm_is_in_place_only_on_a_new_tensor_at_inference():
    from headpuppet.models.blocks import relu_of_norm

    x = torch.randn(1, 4, 3, 3)
    keep = x.clone()
    with torch.no_grad():
        out = relu_of_norm(nn.Identity()(x), x)          # the norm handed x back: x must survive
        assert torch.equal(x, keep) and torch.equal(out, keep.clamp(min=0))
        h = x * 2
        assert relu_of_norm(h, x) is h and (h >= 0).all()  # a new tensor: in place
    h = (x * 2).requires_grad_(True)
    assert relu_of_norm(h, x) is not h                    # autograd: a new tensor


def test_pooled_conv_is_the_3x3_conv_then_average_pooling():
    """pooled_conv (the fast path's down-sampling conv: one 4x4 conv of stride 2) is the same map as
    the 3x3 conv then 2x2 average pooling: with and without bias, odd and tiny sizes, both memory
    formats; a block swapped by strided_downsampling keeps its output, a spectral-normalised one is kept."""
    import torch.nn.functional as F

    from headpuppet.models.blocks import ResBlockDown, pooled_conv, strided_downsampling

    torch.manual_seed(0)
    for bias in (True, False):
        conv3 = nn.Conv2d(5, 7, 3, padding=1, bias=bias).double()
        down = pooled_conv(conv3)
        assert down.weight.shape == (7, 5, 4, 4) and down.stride == (2, 2)
        for shape in ((2, 5, 8, 6), (1, 5, 7, 9), (1, 5, 2, 2), (1, 5, 3, 3)):
            x = torch.randn(*shape, dtype=torch.float64)
            ref = F.avg_pool2d(conv3(x), 2)
            torch.testing.assert_close(down(x), ref, atol=1e-12, rtol=1e-12)
            torch.testing.assert_close(down(x.contiguous(memory_format=torch.channels_last)), ref, atol=1e-12, rtol=1e-12)
    with pytest.raises(ValueError, match="3x3"):
        pooled_conv(nn.Conv2d(4, 4, 3, padding=1, stride=2))

    for norm, pre in ((True, True), (False, False)):
        block = ResBlockDown(6, 8, sn=False, norm=norm, preactivation=pre).eval()
        x = torch.randn(2, 6, 10, 10)
        with torch.no_grad():
            ref = block(x)
            strided_downsampling(block)
            assert block.conv2.stride == (2, 2)
            torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)
            cl = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():  # the fused add of the strided conv and the shortcut
            torch.testing.assert_close(block(cl), ref, atol=1e-5, rtol=1e-5)
    kept = ResBlockDown(6, 8, sn=True)
    strided_downsampling(kept)
    assert kept.conv2.stride == (1, 1)
    flat = ResBlockDown(6, 6, sn=False, downsample=False)
    strided_downsampling(flat)  # no pooling to fold in
    assert flat.conv2.stride == (1, 1)


def test_packed_conv_gives_the_plain_convs_numbers():
    """PackedConv2d (weights reordered once for oneDNN) computes what F.conv2d does, in fp32 and
    bf16, for every kind of conv the fast path packs, with any batch and size, and as the conv of a
    fused add; prepack_convolutions swaps plain convs (and UpsampleConv's) and leaves the rest."""
    import copy

    import torch.nn.functional as F

    from headpuppet.models import blocks
    from headpuppet.models.blocks import PackedConv2d, UpsampleConv, prepack_convolutions

    if not blocks._packing_works(torch.float32):
        pytest.skip("this torch or processor has no oneDNN packed convolution")
    torch.manual_seed(0)
    cl = torch.channels_last
    for k, stride, pad in ((3, 1, 1), (1, 1, 0), (4, 2, 1), (2, 1, 1)):
        conv3 = nn.Conv2d(8, 6, k, stride=stride, padding=pad).eval()
        packed = PackedConv2d.from_conv(conv3)
        for shape in ((1, 8, 9, 9), (3, 8, 16, 12)):
            x = torch.randn(*shape).contiguous(memory_format=cl)
            with torch.inference_mode():
                torch.testing.assert_close(packed(x), conv3(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed.dense_weight(), conv3.weight.detach())
    copied = copy.deepcopy(packed)  # a oneDNN tensor has no storage: deepcopy repacks
    x = torch.randn(1, 8, 9, 9).contiguous(memory_format=cl)
    with torch.inference_mode():
        torch.testing.assert_close(copied(x), packed(x))
    # autograd cannot see through the packed weight: a call that needs a gradient takes the plain conv
    xg = x.clone().requires_grad_(True)
    packed(xg).sum().backward()
    assert xg.grad is not None
    if blocks._packing_works(torch.bfloat16):
        conv3 = nn.Conv2d(8, 6, 3, padding=1).eval().to(torch.bfloat16)
        packed = PackedConv2d.from_conv(conv3)
        with torch.inference_mode():
            # an fp32 input is cast to the weight's dtype, as autocast would
            assert torch.equal(packed(x), F.conv2d(x.bfloat16(), conv3.weight, conv3.bias, padding=1))
            other = torch.randn(1, 6, 9, 9, dtype=torch.bfloat16).contiguous(memory_format=cl)
            assert blocks._fusable(packed, x.bfloat16(), other) == blocks._FUSED_CONV_ADD
            fused = blocks.conv_add(packed, x.bfloat16(), other)
            assert torch.equal(fused, blocks.conv_add(conv3, x.bfloat16(), other))

    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), blocks.conv(4, 4, 3, sn=True),
                          UpsampleConv(nn.Conv2d(4, 3, 3, padding=1))).eval()
    x = torch.randn(2, 4, 5, 5).contiguous(memory_format=cl)
    with torch.no_grad():
        ref = model(x)
    prepack_convolutions(model)
    assert isinstance(model[0], PackedConv2d) and has_spectral_norm(model[1])  # spectral norm: kept
    assert isinstance(model[2].conv, PackedConv2d)  # UpsampleConv's own conv
    with torch.inference_mode():
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
