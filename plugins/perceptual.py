"""First-party perceptual networks for the content loss L_CNT, and the weights they need.

Zakharov et al. 2019, section 3.2: the content loss L_CNT compares the real and generated frames through
VGG19 (ImageNet) and VGGFace (face identities). Registered here:

* ``vgg19``   - :class:`headpuppet.nets.VGG19`, torchvision's ImageNet weights (``headpuppet weights ... vgg19``);
* ``vggface`` - :class:`headpuppet.nets.VGGFace`, Parkhi et al.'s VGG-Face in pytorch-mcn's conversion;
* ``laplacian-pyramid`` - not the paper's loss: a weight-free stand-in (L1 between Laplacian-pyramid
  levels) so that training runs on machines without the pretrained files.

Factories: ``factory(weights_dir=None, device="cpu", layers=None)``; ``vgg19`` / ``vggface`` raise
:class:`headpuppet.errors.WeightsMissingError` naming the ``headpuppet weights`` command when their
file is absent. Also registers the two :class:`WeightSpec` s (source, sha256, licence, converter).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from headpuppet import hookimpl
from headpuppet.nets.vgg import VGG19, VGGFace, convert_torchvision_vgg19, convert_vgg_face_dag
from headpuppet.protocols import WeightSpec
from headpuppet.weights import load_weights

VGG19_SPEC = WeightSpec(
    name="vgg19",
    description="VGG19 trained on ImageNet-1k (torchvision IMAGENET1K_V1), conv trunk for L_CNT",
    source="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    # torch.hub's naming rule: the part after '-' in the file name is the first hex digits of the
    # file's sha256; torchvision publishes nothing longer for this file.
    source_sha256="dcbb9e9d",
    licence="BSD-3-Clause (torchvision); ImageNet training data: non-commercial research terms",
    converter=convert_torchvision_vgg19,
    filename="vgg19-dcbb9e9d.pth",
    extra={"title": "VGG19",
           "sha256_note": "prefix only: torchvision/torch.hub publish the first 8 hex digits of the sha256 "
                          "in the file name (vgg19-<sha256[:8]>.pth)"},
)

VGGFACE_SPEC = WeightSpec(
    name="vggface",
    description="VGG-Face (Parkhi et al. 2015, VGG16, 2622 identities) in pytorch-mcn's conversion, conv trunk",
    source="https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth",
    source_sha256=None,
    # The VGG-Face page: "The provided models can be used for non-commercial research purposes under
    # Creative Commons Attribution License." pytorch-mcn's conversion carries the same terms.
    licence="non-commercial research use, Creative Commons Attribution (Oxford VGG, VGG-Face page)",
    converter=convert_vgg_face_dag,
    filename="vgg_face_dag.pth",
    extra={"title": "VGGFace",
           "sha256_note": "unknown - not verified: the source publishes no checksum; import accepts the file "
                          "with a warning and records its sha256 in the .safetensors metadata"},
)


def vgg19(weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
          layers: Sequence[int] | None = None) -> VGG19:
    """VGG19 trunk with the imported torchvision weights (paper layers 1, 6, 11, 20, 29 by default)."""
    state = load_weights("vgg19", dest=weights_dir, title="VGG19")
    return VGG19(layers=layers).load_trunk(state).to(device)


def vggface(weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
            layers: Sequence[int] | None = None) -> VGGFace:
    """VGGFace trunk with the imported pytorch-mcn weights (paper layers 1, 6, 11, 18, 25 by default)."""
    state = load_weights("vggface", dest=weights_dir, title="VGGFace")
    return VGGFace(layers=layers, bgr=False).load_trunk(state).to(device)


class LaplacianPyramid(nn.Module):
    """A weight-free perceptual network: the levels of a Laplacian image pyramid.

    ``forward(x (B, 3, H, W) in [-1, 1]) -> [L_0, ..., L_{n-1}]`` with ``L_i = G_i - up(G_{i+1})``
    (band-pass detail at scale 2^-i) for the requested levels and the coarsest Gaussian level ``G_n``
    as the last band, ``G_0 = x``, ``G_{i+1} = down2(blur(G_i))`` with the 5-tap binomial kernel
    (Burt & Adelson 1983). L1 over these bands weighs errors at every scale, which a plain pixel
    L1 does not; it is a stand-in that runs anywhere, not the paper's VGG loss.

    Args:
        layers: which bands to return (0 = finest); default all of ``0 .. levels``.
        levels: number of downsamplings (the band list has ``levels + 1`` entries); images stop
            early once a side is below 4 pixels, and asking for a band they lack is an error.
    """

    default_weight = 1.0
    weights: tuple[str, ...] = ()

    def __init__(self, layers: Sequence[int] | None = None, levels: int = 4,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        super().__init__()
        self.levels = int(levels) if layers is None else max(int(levels), max(layers))
        self.layers = list(range(self.levels + 1)) if layers is None else [int(i) for i in layers]
        if not self.layers or min(self.layers) < 0:
            raise ValueError("laplacian-pyramid layers must be band indices >= 0")
        k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=dtype, device=device)
        k2 = torch.outer(k, k) / 256.0  # (5, 5), sums to 1
        self.register_buffer("kernel", k2.expand(3, 1, 5, 5).contiguous(), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        # replicate padding keeps image borders from darkening and works on 2-pixel images
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), self.kernel.to(x.dtype), groups=x.shape[1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        bands: list[torch.Tensor] = []
        g = x  # (B, 3, H, W)
        for _ in range(self.levels):
            if min(g.shape[-2:]) < 4:
                break
            down = self._blur(g)[..., ::2, ::2]  # (B, 3, ceil(H/2), ceil(W/2))
            up = F.interpolate(down, size=g.shape[-2:], mode="bilinear", align_corners=False)
            bands.append(g - up)
            g = down
        bands.append(g)  # coarsest Gaussian level: the low-pass residue
        if max(self.layers) >= len(bands):
            raise ValueError(f"laplacian-pyramid: a {x.shape[-2]}x{x.shape[-1]} image has only {len(bands)} bands, "
                             f"band {max(self.layers)} was asked for")
        return [bands[i] for i in self.layers]


def laplacian_pyramid(weights_dir: str | Path | None = None, device: str | torch.device = "cpu",
                      layers: Sequence[int] | None = None) -> LaplacianPyramid:
    return LaplacianPyramid(layers=layers, device=device)


@hookimpl
def register_perceptual_losses(register):
    register("vgg19", vgg19)
    register("vggface", vggface)
    register("laplacian-pyramid", laplacian_pyramid)


@hookimpl
def register_weights(register):
    register(VGG19_SPEC)
    register(VGGFACE_SPEC)
