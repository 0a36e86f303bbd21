"""dlib's face-recognition ResNet as a perceptual network for the content loss (``dlib-identity``):
identity features of each image's face chip, compared by L1 (feature matching) or by cosine.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .chips import align_chips
from .dat import WEIGHTS_NAME
from .network import CHIP_SIZE, DESCRIPTOR_DIM, STAGES, DlibResNet


#: default stages compared by the dlib-identity loss: the deepest ones, which separate people best
#: (mean L1 between two frames of one video vs of two people, 12 shared videos at 128 px: level3 0.89
#: vs 1.12, level1 0.21 vs 0.31, level0 0.17 vs 0.30, descriptor 0.027 vs 0.054)
IDENTITY_STAGES = ("level1", "level0", "descriptor")
#: the descriptor's factor in DlibIdentity: sqrt(128), so its mean |difference| is ~0.8x dlib's distance
DESCRIPTOR_SCALE = math.sqrt(DESCRIPTOR_DIM)


#: The face-centred square used when no landmarks are given, ``(cx, cy, side)`` as fractions of
#: the frame's width / height / smaller side: the median of dlib's chip rectangle over headpuppet
#: training crops (``face_crop_box`` defaults) of the shared face videos; bench/identity_loss.py
#: measures it and how far its descriptors are from the aligned ones.
FIXED_CROP = (0.514, 0.515, 0.661)


class DlibIdentity(nn.Module):
    """A perceptual network for the content loss from dlib's face ResNet (``dlib-identity``).

    ``forward(x (B, 3, H, W) in [-1, 1], points=None) -> list[Tensor]``: the activations at
    ``layers`` (names in :data:`STAGES` or their indices, as ``loss.perceptual_layers`` takes
    integers; default :data:`IDENTITY_STAGES` = ``[4, 5, 6]``: the last two residual stages and the
    128-d descriptor, the latter times :data:`DESCRIPTOR_SCALE` so that its L1 term reads about
    0.8x dlib's distance) of the face chip of each image. With ``points`` ``(B, 68, 2)`` the chip is
    dlib's alignment (:func:`align_chips`); without (how :class:`headpuppet.training.losses.ContentLoss` calls
    it today) it is the fixed face-centred square :data:`FIXED_CROP` resized to 150 px, which suits
    headpuppet's landmark-centred training crops: on the 128 px crops of the 51 shared training
    videos its descriptors are at cosine 0.987 (median; dlib distance 0.24, worst 0.78 on turned or
    tilted heads) from those of dlib's alignment of the same frame, about the spread between two
    frames of one video (0.982). The content loss takes the L1 distance of each pair of activations
    (feature matching; on the descriptor, L1 of dlib's identity embedding). :meth:`cosine_loss` is
    ``1 - cos`` of the descriptors, for direct use.

    Frozen, eval mode; gradients flow to ``x`` only.
    """

    weights: tuple[str, ...] = (WEIGHTS_NAME,)
    #: forward takes ``points=``: a content loss may pass the targets' landmarks for dlib's alignment
    accepts_points: bool = True

    def __init__(self, net: DlibResNet, layers: Sequence[str] | None = None, crop: Sequence[float] | None = None):
        super().__init__()
        layers = tuple(IDENTITY_STAGES if layers is None else layers)
        # the config's perceptual_layers are integers: index into STAGES (2, 3, 4, 6 = the default)
        layers = tuple(STAGES[v] if isinstance(v, int) and 0 <= v < len(STAGES) else v for v in layers)
        bad = [s for s in layers if s not in STAGES]
        if bad or not layers:
            raise ValueError(f"dlib-identity layers must be names among {', '.join(STAGES)} or their indices "
                             f"0..{len(STAGES) - 1}; got {list(layers)}")
        self.net = net
        self.layers = layers
        self.crop = tuple(float(v) for v in (crop or FIXED_CROP))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "DlibIdentity":
        return super().train(False)

    def chips(self, x: torch.Tensor, points=None) -> torch.Tensor:
        """``(B, 3, 150, 150)`` chips in [-1, 1] (aligned with ``points``, else the fixed crop)."""
        if points is not None:
            return align_chips(x, points)
        H, W = x.shape[-2:]
        cx, cy, side = self.crop
        s = side * min(H, W)
        y0, x0 = cy * H - s / 2, cx * W - s / 2
        # continuous box [x0, x0 + s] -> 150 pixel centres, bilinear (antialiased when shrinking a lot)
        theta = x.new_tensor([[s / W, 0.0, (2 * x0 + s) / W - 1.0], [0.0, s / H, (2 * y0 + s) / H - 1.0]])
        if s > 2 * CHIP_SIZE:  # keep bilinear sampling from aliasing on large frames
            f = CHIP_SIZE / s
            x = F.interpolate(x, size=(max(2, round(H * f)), max(2, round(W * f))), mode="bilinear",
                              antialias=True, align_corners=False)
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), [x.shape[0], 3, CHIP_SIZE, CHIP_SIZE],
                             align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def forward(self, x: torch.Tensor, points=None) -> list[torch.Tensor]:
        acts = self.net.features(self.chips(x, points), self.layers)
        return [a * DESCRIPTOR_SCALE if s == "descriptor" else a for s, a in zip(self.layers, acts)]

    def descriptors(self, x: torch.Tensor, points=None) -> torch.Tensor:
        return self.net.features(self.chips(x, points), ("descriptor",))[0]

    def cosine_loss(self, fake: torch.Tensor, real: torch.Tensor, points=None) -> torch.Tensor:
        """``mean(1 - cos(d(fake), d(real)))``; ``real`` is a constant target."""
        with torch.no_grad():
            target = self.descriptors(real, points)
        return (1.0 - F.cosine_similarity(self.descriptors(fake, points), target, dim=1)).mean()
