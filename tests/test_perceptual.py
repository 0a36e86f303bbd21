"""Perceptual-loss plugins: vgg19 / vggface need weights (clear error when missing), the
laplacian-pyramid runs anywhere."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from headpuppet.errors import WeightsMissingError
from headpuppet.nets.vgg import VGG19, VGGFace
from headpuppet.plugins import registry
from headpuppet.protocols import PerceptualNetwork


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """vgg19 / vggface .safetensors with random (default-initialised) trunks, as an import would leave them."""
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    torch.manual_seed(0)
    dest = tmp_path_factory.mktemp("weights")
    save_file({k: v.contiguous() for k, v in VGG19().state_dict().items()}, str(dest / "vgg19.safetensors"))
    save_file({k: v.contiguous() for k, v in VGGFace().state_dict().items()}, str(dest / "vggface.safetensors"))
    return dest


def test_registered_names(pm):
    reg = registry(pm, "perceptual")
    assert {"vgg19", "vggface", "laplacian-pyramid"} <= set(reg.names())
    assert reg["vgg19"].plugin == "perceptual"
    assert {"vgg19", "vggface"} <= set(registry(pm, "weights").names())


@pytest.mark.parametrize("name,title", [("vgg19", "VGG19"), ("vggface", "VGGFace")])
def test_missing_weights_raise_with_command(pm, tmp_path, name, title):
    with pytest.raises(WeightsMissingError) as err:
        registry(pm, "perceptual").create(name, weights_dir=tmp_path, device="cpu")
    msg = str(err.value)
    assert msg.startswith(f"{title} weights ({name}) are missing: run `headpuppet weights download {name}` or "
                          f"`headpuppet weights import {name} FILE`")
    assert "\n" not in msg


def test_laplacian_pyramid_needs_no_weights(pm, tmp_path, monkeypatch):
    monkeypatch.setenv("HEADPUPPET_WEIGHTS", str(tmp_path))  # empty: nothing to load
    net = registry(pm, "perceptual").create("laplacian-pyramid", weights_dir=None, device="cpu")
    assert isinstance(net, PerceptualNetwork)
    assert net.weights == ()
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    bands = net(x)
    assert [tuple(b.shape) for b in bands] == [(2, 3, 32, 32), (2, 3, 16, 16), (2, 3, 8, 8), (2, 3, 4, 4), (2, 3, 2, 2)]
    # the bands are a complete decomposition: collapsing the pyramid gives the image back
    g = bands[-1]
    for band in reversed(bands[:-1]):
        g = F.interpolate(g, size=band.shape[-2:], mode="bilinear", align_corners=False) + band
    torch.testing.assert_close(g, x, rtol=0, atol=1e-5)
    # a constant image has no detail: every band but the coarsest is zero
    flat = net(torch.full((1, 3, 32, 32), 0.3))
    assert all(b.abs().max() < 1e-6 for b in flat[:-1])
    assert torch.allclose(flat[-1], torch.tensor(0.3))


def test_laplacian_pyramid_layers_and_small_images(pm):
    net = registry(pm, "perceptual").create("laplacian-pyramid", layers=[0, 2])
    out = net(torch.zeros(1, 3, 32, 32))
    assert [o.shape[-1] for o in out] == [32, 8]
    with pytest.raises(ValueError, match="band 4"):
        registry(pm, "perceptual").create("laplacian-pyramid")(torch.zeros(1, 3, 8, 8))


def test_vgg_factories_load_layers_and_stay_frozen(pm, random_weights):
    reg = registry(pm, "perceptual")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    vgg = reg.create("vgg19", weights_dir=random_weights, device="cpu")
    assert isinstance(vgg, PerceptualNetwork) and vgg.weights == ("vgg19",)
    assert vgg.layers == [1, 6, 11, 20, 29]
    assert [tuple(a.shape[1:]) for a in vgg(x)] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    face = reg.create("vggface", weights_dir=random_weights, device="cpu", layers=[1, 18])
    assert [tuple(a.shape[1:]) for a in face(x)] == [(64, 32, 32), (512, 4, 4)]
    for net in (vgg, face):
        assert not any(p.requires_grad for p in net.parameters())
        net.train()
        assert not net.training  # a reference network ignores .train()
    # the activations are ReLU outputs (the paper's indices are ReLU layers in this layout)
    assert all((a >= 0).all() for a in vgg(x))


def test_vgg_rejects_bad_layer_index():
    with pytest.raises(ValueError, match="outside features"):
        VGG19(layers=[37], device="meta")
