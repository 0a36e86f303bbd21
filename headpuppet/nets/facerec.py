"""Face-recognition network for the identity metric CSIM.

The paper (Zakharov et al. 2019, section 4, "Metrics") measures identity mismatch as the cosine
similarity (CSIM) between embedding vectors of a state-of-the-art face-recognition network, ArcFace
(Deng et al., CVPR 2019). This file rebuilds ArcFace's improved ResNet (``iresnet``) exactly as
InsightFace's ``recognition/arcface_torch/backbones/iresnet.py`` names it, so its published
``backbone.pth`` files (a plain ``torch.save`` of the state dict; e.g. ``ms1mv3_arcface_r100_fp16``)
load after :func:`convert_arcface`.

Input: faces aligned to ArcFace's 112x112 five-point template (:func:`align_faces` does this from
our 68 landmarks), in ``[-1, 1]`` (ArcFace's ``(x - 127.5) / 127.5``). Output: ``(B, 512)``
embeddings; CSIM is their cosine.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn

from . import frozen
from .inception import _match

ARCFACE_SOURCE = "https://github.com/deepinsight/insightface/tree/master/model_zoo"
ARCFACE_LICENCE = ("InsightFace pretrained models: non-commercial research purposes only "
                   "(code MIT); training data MS1MV3")

#: blocks per stage for each published depth
DEPTHS = {"r18": (2, 2, 2, 2), "r34": (3, 4, 6, 3), "r50": (3, 4, 14, 3), "r100": (3, 13, 30, 3)}

#: ArcFace's 112x112 alignment template: right eye, left eye (subject's), nose tip, mouth corners
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """BN -> conv -> BN -> PReLU -> conv(stride) -> BN, plus the (projected) input."""

    def __init__(self, cin: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-05)
        self.conv1 = _conv3x3(cin, planes)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-05)
        self.prelu = nn.PReLU(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-05)
        self.downsample = downsample

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    """ArcFace backbone. ``forward((B, 3, 112, 112) in [-1, 1]) -> (B, num_features)``.

    Args:
        layers: blocks per stage (see :data:`DEPTHS`).
        num_features: embedding size (512 in every published model).
        width: channels of the first stage (64 published; tests use fewer, doubling per stage).
    """

    def __init__(self, layers=DEPTHS["r100"], num_features: int = 512, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-05)
        self.prelu = nn.PReLU(width)
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1])
        self.layer3 = self._make_layer(width * 4, layers[2])
        self.layer4 = self._make_layer(width * 8, layers[3])
        self.bn2 = nn.BatchNorm2d(width * 8, eps=1e-05)
        self.fc = nn.Linear(width * 8 * 7 * 7, num_features)  # 112 / 2^4 = 7
        self.features = nn.BatchNorm1d(num_features, eps=1e-05)

    def _make_layer(self, planes: int, blocks: int) -> nn.Sequential:
        down = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride=2, bias=False),
                             nn.BatchNorm2d(planes, eps=1e-05))
        layers = [IBasicBlock(self.inplanes, planes, 2, down)]
        self.inplanes = planes
        layers += [IBasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))  # (B, w, 112, 112)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 8w, 7, 7)
        x = self.bn2(x).flatten(1)
        return self.features(self.fc(x))  # (B, 512)


def convert_arcface(path: str | Path, arch: str = "r100") -> dict[str, torch.Tensor]:
    """InsightFace arcface_torch ``backbone.pth`` -> this module's state dict (float32).

    Loaded with ``weights_only=True``; fp16 checkpoints are cast to float32; a ``module.`` prefix
    (DistributedDataParallel) is accepted; every expected tensor must be present with its shape.
    """
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
        raw = raw["state_dict"]
    return _match(raw, IResNet(DEPTHS[arch]).state_dict(), f"ArcFace {arch}")


def build_arcface(state_dict: dict[str, torch.Tensor] | None = None, arch: str = "r100",
                  device: str | torch.device = "cpu", width: int = 64) -> IResNet:
    """A frozen ArcFace backbone in eval mode (random weights when ``state_dict`` is None: tests and
    benchmarks only)."""
    return frozen(IResNet(DEPTHS[arch], width=width), state_dict, "ArcFace", device)


def five_points(points: np.ndarray) -> np.ndarray:
    """``(..., 68, 2)`` iBUG landmarks -> ``(..., 5, 2)`` eye centres, nose tip, mouth corners, in
    the template's order (image-left eye first)."""
    p = np.asarray(points, dtype=np.float64)
    return np.stack([p[..., 36:42, :].mean(-2), p[..., 42:48, :].mean(-2), p[..., 30, :],
                     p[..., 48, :], p[..., 54, :]], axis=-2)


def align_faces(images: np.ndarray, points: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp each face onto ArcFace's template with a similarity transform (as InsightFace's
    ``norm_crop``). ``images`` (B, H, W, 3) uint8, ``points`` (B, 68, 2) px -> (B, size, size, 3) uint8."""
    out = np.empty((len(images), size, size, 3), np.uint8)
    dst = ARCFACE_TEMPLATE * (size / 112.0)
    for i, (img, pts) in enumerate(zip(images, points)):
        src = five_points(pts)
        m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
        if m is None:  # degenerate points: fall back to a plain resize rather than failing the run
            out[i] = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
            continue
        out[i] = cv2.warpAffine(np.ascontiguousarray(img), m, (size, size), borderValue=0)
    return out
