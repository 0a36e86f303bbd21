"""Loss terms of section 3.2: hinge (D), adversarial, feature matching, embedding match, content."""

from __future__ import annotations

import pytest
import torch

from headpuppet.config import LossConfig
from headpuppet.errors import WeightsMissingError
from headpuppet.training.losses import ContentLoss, adversarial_g, embedding_match, feature_matching, hinge_d


def test_hinge_d_known_values():
    real = torch.tensor([2.0, 0.5, -1.0])   # relu(1 - r) = 0, 0.5, 2
    fake = torch.tensor([-2.0, 0.0, 1.0])   # relu(1 + f) = 0, 1, 2
    out = hinge_d(real, fake)
    assert set(out) == {"real", "fake"}
    torch.testing.assert_close(out["real"], torch.tensor(2.5 / 3))
    torch.testing.assert_close(out["fake"], torch.tensor(1.0))
    # confident, correct scores give zero loss
    zero = hinge_d(torch.tensor([1.0, 3.0]), torch.tensor([-1.0, -5.0]))
    assert zero["real"] == 0 and zero["fake"] == 0


def test_adversarial_g():
    s = torch.tensor([1.0, -3.0], requires_grad=True)
    loss = adversarial_g(s)
    torch.testing.assert_close(loss, torch.tensor(1.0))
    loss.backward()
    torch.testing.assert_close(s.grad, torch.tensor([-0.5, -0.5]))


def test_feature_matching_zero_for_equal_and_real_detached():
    torch.manual_seed(0)
    real = [torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 8, 4, 4, requires_grad=True)]
    assert feature_matching(real, [r.detach().clone() for r in real]) == 0
    fake = [r.detach() + 0.5 for r in real]
    fake[1] = real[1].detach() + 1.5
    for f in fake:
        f.requires_grad_(True)
    loss = feature_matching(real, fake)
    torch.testing.assert_close(loss, torch.tensor((0.5 + 1.5) / 2))  # mean over layers of mean L1
    loss.backward()
    assert all(f.grad is not None for f in fake) and all(r.grad is None for r in real)
    with pytest.raises(ValueError):
        feature_matching(real, fake[:1])


def test_embedding_match_l1_both_sides_get_gradients():
    e = torch.tensor([[1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    w = torch.tensor([[1.0, 0.0], [1.0, -1.0]], requires_grad=True)
    loss = embedding_match(e, w)
    torch.testing.assert_close(loss, torch.tensor(4.0 / 4))
    loss.backward()
    assert e.grad is not None and w.grad is not None
    with pytest.raises(ValueError):
        embedding_match(e, w[:1])


def _pyramid_cfg(weight=2.0, layers=None):
    return LossConfig(perceptual={"laplacian-pyramid": weight},
                      perceptual_layers={} if layers is None else {"laplacian-pyramid": layers})


def test_content_loss_pyramid_zero_positive_and_gradient_to_fake_only(pm):
    torch.manual_seed(0)
    loss_fn = ContentLoss(pm, _pyramid_cfg())
    real = torch.rand(2, 3, 32, 32, requires_grad=True)
    same = loss_fn(real.detach().clone(), real)
    assert set(same) == {"laplacian-pyramid"} and same["laplacian-pyramid"] == 0
    fake = (real.detach() + 0.1 * torch.randn_like(real)).requires_grad_(True)
    out = loss_fn(fake, real)["laplacian-pyramid"]
    assert out.ndim == 0 and out > 0
    out.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None


def test_content_loss_weight_and_layers(pm):
    torch.manual_seed(1)
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    one = ContentLoss(pm, _pyramid_cfg(1.0))(fake, real)["laplacian-pyramid"]
    three = ContentLoss(pm, _pyramid_cfg(3.0))(fake, real)["laplacian-pyramid"]
    torch.testing.assert_close(three, 3 * one)
    # only band 0 requested: the sum runs over that layer alone
    band0 = ContentLoss(pm, _pyramid_cfg(1.0, layers=[0]))(fake, real)["laplacian-pyramid"]
    assert 0 < band0 < one
    # weight 0 switches a network off without building it (vgg19 weights are absent here)
    cfg = LossConfig(perceptual={"laplacian-pyramid": 1.0, "vgg19": 0.0})
    assert set(ContentLoss(pm, cfg, weights_dir="/nonexistent")(fake, real)) == {"laplacian-pyramid"}
    with pytest.raises(ValueError):
        ContentLoss(pm, _pyramid_cfg())(fake, real[:1])


def test_content_loss_paper_default_without_weights_names_command(pm, tmp_path):
    with pytest.raises(WeightsMissingError, match="headpuppet weights download vgg19"):
        ContentLoss(pm, LossConfig(), weights_dir=tmp_path)


def test_content_loss_vgg_networks(pm, tmp_path):
    """The paper's two networks (random trunks standing in for the imported weights)."""
    from safetensors.torch import save_file

    from headpuppet.nets.vgg import VGG19, VGGFace

    torch.set_num_threads(1)
    torch.manual_seed(0)
    save_file(VGG19().state_dict(), str(tmp_path / "vgg19.safetensors"))
    save_file(VGGFace().state_dict(), str(tmp_path / "vggface.safetensors"))
    cfg = LossConfig()  # vgg19 1e-2 on layers 1,6,11,20,29; vggface 2e-3 on 1,6,11,18,25
    loss_fn = ContentLoss(pm, cfg, weights_dir=tmp_path)
    assert loss_fn.nets["vgg19"].layers == [1, 6, 11, 20, 29] and loss_fn.nets["vggface"].layers == [1, 6, 11, 18, 25]
    real = torch.rand(2, 3, 32, 32) * 2 - 1
    same = loss_fn(real.clone(), real)
    assert set(same) == {"vgg19", "vggface"} and all(v == 0 for v in same.values())
    fake = (real + 0.2 * torch.randn_like(real)).clamp(-1, 1).requires_grad_(True)
    out = loss_fn(fake, real)
    assert all(v > 0 for v in out.values())
    sum(out.values()).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert not any(p.grad is not None for p in loss_fn.parameters())


def test_content_loss_passes_landmarks_only_to_networks_that_take_them(pm):
    """``points`` reach a network declaring ``accepts_points`` (face-aligned crops) and no other."""
    from torch import nn

    seen = {}

    class Aligned(nn.Module):
        accepts_points = True

        def forward(self, x, points=None):
            seen["aligned"] = points
            return [x.mean((2, 3))]

    class Plain(nn.Module):
        def forward(self, x):  # no points argument: must not receive one
            seen["plain"] = True
            return [x]

    loss_fn = ContentLoss(pm, _pyramid_cfg())
    loss_fn.nets = nn.ModuleDict({"aligned": Aligned(), "plain": Plain()})
    loss_fn.weights = {"aligned": 1.0, "plain": 2.0}
    pts = torch.rand(2, 68, 2)
    out = loss_fn(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8), points=pts)
    assert seen["aligned"] is pts and seen["plain"] and set(out) == {"aligned", "plain"}
    assert float(out["plain"]) == pytest.approx(2.0)
    loss_fn(torch.zeros(2, 3, 8, 8), torch.ones(2, 3, 8, 8))
    assert seen["aligned"] is None


def test_ssim_loss_matches_evaluate_ssim_and_trains_fake_only():
    """The training term measures what `evaluate` reports: torch SSIM equals the SSIM metric plugin
    (scikit-image's structural_similarity) on real-looking images, and its gradient reaches the fake only."""
    import numpy as np
    from skimage import data

    from headpuppet_plugins.metrics import ssim  # the metric `evaluate` reports as SSIM
    from headpuppet.training.losses import ssim_loss, ssim_map

    img = data.astronaut()[::4, ::4][:96, :96].astype(np.float64)  # (96, 96, 3)
    rng = np.random.default_rng(0)
    noisy = np.clip(img + rng.normal(0, 25, img.shape), 0, 255)
    blurred = (img + np.roll(img, 1, 0) + np.roll(img, 1, 1) + np.roll(img, (1, 1), (0, 1))) / 4
    a = np.stack([img, img])
    b = np.stack([noisy, blurred])
    ref = ssim(a, b)
    ta = torch.tensor(a.transpose(0, 3, 1, 2) / 127.5 - 1, dtype=torch.float64)
    tb = torch.tensor(b.transpose(0, 3, 1, 2) / 127.5 - 1, dtype=torch.float64, requires_grad=True)
    got = ssim_map(tb, ta).detach().numpy()
    assert np.allclose(got, ref, atol=1e-9), (got, ref)
    assert ref[0] < 0.8 and ref[1] < 0.99  # both pairs differ: the check is not 1 == 1
    assert float(ssim_loss(ta, ta)) == pytest.approx(0.0, abs=1e-12)

    real = ta.clone().requires_grad_(True)
    loss = ssim_loss(tb, real)
    loss.backward()
    assert loss.item() == pytest.approx(float((1 - ref).mean()), abs=1e-9)
    assert tb.grad is not None and tb.grad.abs().sum() > 0
    assert real.grad is None
    with pytest.raises(ValueError, match="window"):
        ssim_map(torch.zeros(1, 3, 5, 5), torch.zeros(1, 3, 5, 5))
