"""A weight-free image pyramid used as a stand-in perceptual network (not the paper's L_CNT).

Registered by the first-party perceptual plugin as ``laplacian-pyramid`` so training runs on machines
without the pretrained VGG files.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


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
