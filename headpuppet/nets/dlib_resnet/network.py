"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``, Davis King 2017) as a
PyTorch module: 150x150 RGB face chips -> 128-d descriptors.

Network (dlib ``tools/python/src/face_recognition.cpp``, ``anet_type``; read outermost first)::

    loss_metric<fc_no_bias<128, avg_pool_everything<
        alevel0<alevel1<alevel2<alevel3<alevel4<
        max_pool<3,3,2,2, relu<affine<con<32,7,7,2,2, input_rgb_image_sized<150>>>>>>>>>>>>

    alevel4 = ares<32> x3            alevel3 = ares_down<64>,  ares<64> x3
    alevel2 = ares_down<128>, ares<128> x2
    alevel1 = ares_down<256>, ares<256> x2                     alevel0 = ares_down<256>
    ares<N>      = relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    ares_down<N> = relu(avg_pool2x2/2(x) (+) affine(con3x3(relu(affine(con3x3/2(x))))))

29 convolutions. ``affine`` is batch norm folded into a per-channel scale and shift (the file stores
it that way). dlib's layers give the exact arithmetic this module repeats:

* a convolution with stride != 1 (and every pool) has **no padding**; 3x3 stride-1 convolutions pad
  by 1. Sizes: 150 -> 72 (7x7/2) -> 35 (max pool) -> 35 -> 17 -> 8 -> 4 -> 2 -> 1x1x256 after the
  global average -> 128;
* ``add_prev`` adds two tensors of different shapes by zero-padding both to the larger shape,
  aligned at the top-left corner (dlib ``tt::add``). This happens twice: at 8 -> the residual branch
  is 3x3 while the pooled shortcut is 4x4 (and 128 vs 256 channels: the shortcut fills the first
  128), and at 4 -> 1x1 vs 2x2. :func:`add_prev` does the same;
* input: ``(pixel - mean) / 256`` per channel with the means stored in the file
  (122.782, 117.001, 104.298 for R, G, B), pixels on [0, 255];
* the descriptor is the raw ``fc`` output (not normalised; it comes out with a norm close to 1).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import frozen

#: the network's input: square chips of this many pixels (dlib ``input_rgb_image_sized<150>``)
CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
#: dlib's rule: descriptors of one person are less than this far apart (Euclidean)
SAME_PERSON_THRESHOLD = 0.6
DEFAULT_MEAN = (122.782, 117.001, 104.298)

#: (filters, downsample) of the residual blocks in forward order (alevel4 ... alevel0)
BLOCKS: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)
#: names of the activations :meth:`DlibResNet.features` can return
STAGES = ("stem", "level4", "level3", "level2", "level1", "level0", "descriptor")


class Affine(nn.Module):
    """dlib's ``affine`` layer in conv mode: ``x * weight[c] + bias[c]`` (batch norm, folded)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib ``add_prev``: the sum of two ``(B, C, H, W)`` tensors after zero-padding each to the
    larger channel count and size, aligned at channel 0 and the top-left pixel."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t):
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResBlock(nn.Module):
    """``ares`` / ``ares_down``: ``relu(shortcut (+) affine(con(relu(affine(con(x))))))``; the
    first convolution has stride 2 and no padding when ``down``, and the shortcut is then a 2x2/2
    average pool (no projection: :func:`add_prev` pads its channels)."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.aff1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)
        self.aff2 = Affine(cout)

    def forward(self, x):
        h = self.aff2(self.conv2(F.relu(self.aff1(self.conv1(x)))))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_prev(h, skip))


class DlibResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1: ``(B, 3, 150, 150)`` aligned chips in ``[-1, 1]``
    RGB (headpuppet's convention; :meth:`forward_pixels` takes ``[0, 255]``) -> ``(B, 128)``
    descriptors, as ``dlib.face_recognition_model_v1.compute_face_descriptor`` on the same chips.

    The state dict holds ``mean`` (the input means read from the file), ``stem.conv``,
    ``stem.aff``, ``blocks.N.{conv1,aff1,conv2,aff2}`` and ``fc.weight`` ``(128, 256)``.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(DEFAULT_MEAN).view(1, 3, 1, 1))
        self.stem = nn.Module()
        self.stem.conv = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        self.stem.aff = Affine(32)
        blocks, cin = [], 32
        for cout, down in BLOCKS:
            blocks.append(ResBlock(cin, cout, down))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(256, DESCRIPTOR_DIM, bias=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``[-1, 1]`` RGB -> dlib's input: ``(pixel - mean) / 256`` with pixels on [0, 255]."""
        return ((x + 1.0) * 127.5 - self.mean) / 256.0

    def features(self, x: torch.Tensor, stages: Sequence[str] = ("descriptor",),
                 normalised: bool = False) -> list[torch.Tensor]:
        """Activations at ``stages`` (names in :data:`STAGES`: ``stem`` after the max pool,
        ``level4`` ... ``level0`` after each group of blocks, ``descriptor``), in the order asked.
        ``x``: ``(B, 3, 150, 150)`` in ``[-1, 1]`` (already dlib-normalised when ``normalised``)."""
        bad = [s for s in stages if s not in STAGES]
        if bad:
            raise ValueError(f"unknown dlib ResNet stages {bad}; known: {', '.join(STAGES)}")
        want = set(stages)
        last = max(STAGES.index(s) for s in stages)
        found: dict[str, torch.Tensor] = {}
        h = x if normalised else self.normalise(x)
        if h.device.type == "cpu":
            # channels-last: the network's convolutions forward and backward run ~1.8x faster on CPU
            # (dlib-identity as a training loss, 4 chips: 87 -> 49 ms), same values to float rounding
            h = h.contiguous(memory_format=torch.channels_last)
        h = F.max_pool2d(F.relu(self.stem.aff(self.stem.conv(h))), 3, 2)  # (B, 32, 35, 35)
        found["stem"] = h
        if last == 0:
            return [found[s] for s in stages]
        ends = {2: "level4", 6: "level3", 9: "level2", 12: "level1", 13: "level0"}
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in ends:
                found[ends[i]] = h  # (B, 32, 35, 35) (64, 17, 17) (128, 8, 8) (256, 4, 4) (256, 2, 2)
                if STAGES.index(ends[i]) >= last:
                    break
        if "descriptor" in want:
            found["descriptor"] = self.fc(h.mean((2, 3)))  # avg_pool_everything -> (B, 128)
        return [found[s] for s in stages]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]

    def forward_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 150, 150)`` RGB on [0, 255] -> ``(B, 128)``."""
        return self.features((x - self.mean) / 256.0, normalised=True)[0]


def build_dlib_resnet(state_dict: dict[str, torch.Tensor] | None = None,
                      device: str | torch.device = "cpu") -> DlibResNet:
    """A frozen :class:`DlibResNet` in eval mode (random weights when ``state_dict`` is None: tests
    and benchmarks only)."""
    net = frozen(DlibResNet(), state_dict, "dlib ResNet", device)
    return net.to(memory_format=torch.channels_last) if torch.device(device).type == "cpu" else net
