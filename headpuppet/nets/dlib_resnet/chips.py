"""dlib's face-chip alignment: where the face-recognition ResNet's 150 px chips come from.

``get_face_chip_details(shape, 150, 0.25)`` fits a similarity transform (least squares, Umeyama)
from dlib's mean-face template (iBUG points 27-54 and 60-64: nose, eyes, upper lips; eyebrows,
jaw and lower lip ignored) scaled into a 150 px chip with 25 % padding, to the 68 landmarks; then
``extract_image_chip`` samples the chip bilinearly (pixels needing a neighbour outside the image
are black, values truncated to uint8), first shrinking the image with dlib's 5x5 ``pyramid_down<2>``
while the chip's footprint after one more halving still has more pixels than the chip (faces larger
than ~300 px). :func:`extract_chips` repeats all of that, pyramid included; :func:`align_chips` does
it in float with ``grid_sample`` (no uint8 truncation), so gradients reach the image.

Landmark convention: headpuppet's points are continuous pixel coordinates in which pixel ``i``
covers ``[i, i + 1]`` (see :mod:`headpuppet.media.crop`); dlib's have pixel ``i`` centred on ``i``. The
alignment functions take headpuppet points and subtract 0.5 (``dlib_points=True`` to pass dlib's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .network import CHIP_SIZE

CHIP_PADDING = 0.25

# dlib get_face_chip_details: mean face shape of iBUG points 17..67 on [0, 1]
_MEAN_FACE_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689)
_MEAN_FACE_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182)
#: the iBUG points dlib fits (17..67 without the eyebrows 17-26 and the lower lip 55-59, 65-67)
CHIP_POINTS = tuple(i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67))


def _template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    idx = np.asarray(CHIP_POINTS) - 17
    xy = np.stack([np.asarray(_MEAN_FACE_X)[idx], np.asarray(_MEAN_FACE_Y)[idx]], 1)
    return (padding + xy) / (2 * padding + 1) * size  # (N, 2) chip pixels


@dataclass
class ChipDetails:
    """dlib's ``chip_details`` of one face: a rectangle ``(left, top, right, bottom)`` in image
    pixels (dlib convention), rotated by ``angle`` about its centre, sampled into ``size`` pixels."""

    rect: tuple[float, float, float, float]
    angle: float
    size: int

    def corners(self, rect=None) -> np.ndarray:
        """Rotated (tl, tr, bl) corners of ``rect`` (default: this one)."""
        l, t, r, b = self.rect if rect is None else rect
        c = np.array([(l + r) / 2, (t + b) / 2])
        rot = np.array([[math.cos(self.angle), -math.sin(self.angle)], [math.sin(self.angle), math.cos(self.angle)]])
        pts = np.array([[l, t], [r, t], [l, b]]) - c
        return pts @ rot.T + c


def chip_details(points: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                 dlib_points: bool = False) -> list[ChipDetails]:
    """dlib's ``get_face_chip_details(shape, size, padding)`` for ``(68, 2)`` or ``(B, 68, 2)`` points."""
    p = np.asarray(points, np.float64)
    p = p[None] if p.ndim == 2 else p
    if p.shape[1:] != (68, 2):
        raise ValueError(f"expected (B, 68, 2) landmarks, got {p.shape}")
    if not dlib_points:
        p = p - 0.5
    src = _template(size, padding)                  # chip points (from)
    dst = p[:, list(CHIP_POINTS)]                   # image points (to)
    sm, dm = src.mean(0), dst.mean(1)               # (2,), (B, 2)
    sc, dc = src - sm, dst - dm[:, None]
    var = (sc ** 2).sum()
    # least-squares similarity chip -> image, M = [[a, -b], [b, a]] (= Umeyama in 2D)
    a = (sc[None, :, 0] * dc[..., 0] + sc[None, :, 1] * dc[..., 1]).sum(1) / var
    b = (sc[None, :, 0] * dc[..., 1] - sc[None, :, 1] * dc[..., 0]).sum(1) / var
    out = []
    for ai, bi, dmi in zip(a, b, dm):
        m = np.array([[ai, -bi], [bi, ai]])
        t = dmi - m @ sm
        angle = math.atan2(bi, ai)
        scale = math.hypot(ai, bi)
        cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
        half = (size * scale - 1) / 2  # dlib centered_drect: width - 1 between the corners
        out.append(ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size))
    return out


def _rect_down(rect):
    # dlib pyramid_down<2>::point_down(p) = p / 2 - (1.25, 0.75)
    l, t, r, b = rect
    return (l / 2 - 1.25, t / 2 - 0.75, r / 2 - 1.25, b / 2 - 0.75)


def _area(rect) -> float:
    l, t, r, b = rect
    return max(0.0, r - l + 1) * max(0.0, b - t + 1)


def _plan(det: ChipDetails, hw: tuple[int, int]):
    """dlib extract_image_chips for one chip: (pyramid levels, bounding box, rect in level coords)."""
    H, W = hw
    area = det.size * det.size
    depth, grow = 0, 2.0
    rect = _rect_down(det.rect)
    while _area(rect) > area:
        rect = _rect_down(rect)
        depth += 1
        grow = grow * 2 + 2
    l, t, r, b = det.rect
    c = np.array([(l + r) / 2, (t + b) / 2])
    rot = np.array([[math.cos(det.angle), -math.sin(det.angle)], [math.sin(det.angle), math.cos(det.angle)]])
    corners = (np.array([[l, t], [r, t], [l, b], [r, b]]) - c) @ rot.T + c
    x0, y0 = corners.min(0) - grow
    x1, y1 = corners.max(0) + grow
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W - 1), min(y1, H - 1)
    bbox = tuple(int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5)) for v in (x0, y0, x1, y1))  # lround
    level = -1
    rect = (l - bbox[0], t - bbox[1], r - bbox[0], b - bbox[1])
    while _area(_rect_down(rect)) > area:
        level += 1
        rect = _rect_down(rect)
    return depth, bbox, level, rect


def _affine_from_corners(corners: np.ndarray, size: int) -> np.ndarray:
    """(2, 3) matrix mapping chip pixel (u, v, 1) to the image through tl, tr, bl corners."""
    tl, tr, bl = corners
    n = size - 1
    return np.array([[(tr[0] - tl[0]) / n, (bl[0] - tl[0]) / n, tl[0]],
                     [(tr[1] - tl[1]) / n, (bl[1] - tl[1]) / n, tl[1]]])


def pyramid_down(img: np.ndarray) -> np.ndarray:
    """dlib ``pyramid_down<2>`` on an ``(H, W, 3)`` uint8 image: 5x5 ``[1 4 6 4 1]^2 / 256`` filter,
    every other pixel, integer arithmetic -> ``((H - 3) // 2, (W - 3) // 2, 3)`` uint8."""
    x = img.astype(np.int64)
    H, W = x.shape[:2]
    wc, hr = (W - 3) // 2, (H - 3) // 2
    k = (1, 4, 6, 4, 1)
    tmp = sum(k[j] * x[:, j:j + 2 * wc:2] for j in range(5))            # (H, wc, 3)
    down = sum(k[j] * tmp[j:j + 2 * hr:2] for j in range(5))            # (hr, wc, 3)
    return (down // 256).astype(np.uint8)


def _bilinear_uint8(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """dlib transform_image with interpolate_bilinear: chip (u, v) samples ``img`` at ``m @ (u, v, 1)``;
    black where a neighbour is outside; values truncated to uint8."""
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x = m[0, 0] * u + m[0, 1] * v + m[0, 2]
    y = m[1, 0] * u + m[1, 1] * v + m[1, 2]
    H, W = img.shape[:2]
    left, top = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    ok = (left >= 0) & (top >= 0) & (left + 1 < W) & (top + 1 < H)
    lc, tc = np.clip(left, 0, max(W - 2, 0)), np.clip(top, 0, max(H - 2, 0))
    fx, fy = (x - left)[..., None], (y - top)[..., None]
    f = img.astype(np.float64)
    tl, tr = f[tc, lc], f[tc, lc + 1]
    bl, br = f[tc + 1, lc], f[tc + 1, lc + 1]
    val = (1 - fy) * ((1 - fx) * tl + fx * tr) + fy * ((1 - fx) * bl + fx * br)
    out = np.where(ok[..., None], val, 0.0)
    return out.astype(np.uint8)  # static_cast<unsigned char>: truncation


def extract_chips(images: np.ndarray, points: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                  dlib_points: bool = False) -> np.ndarray:
    """Aligned face chips exactly as ``dlib.get_face_chip(img, shape, size, padding)``.

    ``images``: ``(B, H, W, 3)`` (or one ``(H, W, 3)``) uint8 RGB; ``points``: ``(B, 68, 2)`` (or
    ``(68, 2)``) headpuppet landmarks (dlib's with ``dlib_points=True``) -> ``(B, size, size, 3)`` uint8.
    """
    images = np.asarray(images)
    single = images.ndim == 3
    if single:
        images, points = images[None], np.asarray(points)[None]
    dets = chip_details(points, size, padding, dlib_points)
    out = np.empty((len(images), size, size, 3), np.uint8)
    for i, (img, det) in enumerate(zip(images, dets)):
        depth, bbox, level, rect = _plan(det, img.shape[:2])
        sub = img[bbox[1]:bbox[3] + 1, bbox[0]:bbox[2] + 1]
        if level >= 0:
            for _ in range(level + 1):
                sub = pyramid_down(sub)
        out[i] = _bilinear_uint8(sub, _affine_from_corners(det.corners(rect), size), size)
    return out[0] if single else out


def chip_affines(points: np.ndarray, hw: tuple[int, int], size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                 dlib_points: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`align_chips`: per face, the (2, 3) chip -> image map on the image (level -1) or on
    its pyramid level, the pyramid level (-1: none) and the sub-image origin ``(x0, y0)`` the
    pyramid starts from."""
    dets = chip_details(points, size, padding, dlib_points)
    mats, levels, origins = [], [], []
    for det in dets:
        _, bbox, level, rect = _plan(det, hw)
        if level < 0:  # sample the whole image: same positions as in the sub-image, shifted back
            rect = det.rect
            bbox = (0, 0, 0, 0)
        mats.append(_affine_from_corners(det.corners(rect), size))
        levels.append(level)
        origins.append(bbox[:2])
    return np.stack(mats), np.asarray(levels), np.asarray(origins)


def _pyramid_down_torch(x: torch.Tensor) -> torch.Tensor:
    """Float ``pyramid_down<2>`` (no integer truncation): ``(B, C, H, W)`` -> ``(B, C, (H-3)//2, (W-3)//2)``."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device)
    w = (k[:, None] * k[None, :] / 256.0).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(x, w.contiguous(), stride=2, groups=x.shape[1])


def _sample(x: torch.Tensor, m: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear chips of ``x`` (B, C, H, W) at ``m`` (B, 2, 3) (chip pixel -> image pixel, dlib
    convention), zero where a neighbour lies outside (as dlib)."""
    B, _, H, W = x.shape
    r = torch.arange(size, dtype=m.dtype, device=m.device)
    v, u = torch.meshgrid(r, r, indexing="ij")
    uv1 = torch.stack([u, v, torch.ones_like(u)], -1).view(1, -1, 3)        # (1, S*S, 3)
    xy = uv1 @ m.transpose(1, 2)                                            # (B, S*S, 2) image pixels
    gx = xy[..., 0] * (2.0 / max(W - 1, 1)) - 1.0
    gy = xy[..., 1] * (2.0 / max(H - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], -1).view(B, size, size, 2).to(x.dtype)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    fx, fy = torch.floor(xy[..., 0]), torch.floor(xy[..., 1])
    ok = (fx >= 0) & (fy >= 0) & (fx + 1 < W) & (fy + 1 < H)
    return out * ok.view(B, 1, size, size).to(out.dtype)


def align_chips(images: torch.Tensor, points, size: int = CHIP_SIZE, padding: float = CHIP_PADDING,
                dlib_points: bool = False) -> torch.Tensor:
    """Batched, differentiable dlib alignment: ``(B, 3, H, W)`` images (any range; headpuppet's
    ``[-1, 1]``) and ``(B, 68, 2)`` landmarks (numpy or tensor; no gradient flows into them) ->
    ``(B, 3, size, size)`` chips in the images' range, by ``grid_sample``.

    Same geometry as :func:`extract_chips` (and dlib); differences: float values (no uint8
    truncation, which lowers dlib's chips by 0.5 grey level on average) and, for faces large enough to
    need dlib's image pyramid, the pyramid runs in float. Samples that need a pixel outside the image
    are 0 in pixel space, i.e. ``-1`` in ``[-1, 1]`` images.
    """
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    B, _, H, W = images.shape
    mats, levels, origins = chip_affines(np.asarray(points), (H, W), size, padding, dlib_points)
    m = torch.as_tensor(mats, dtype=torch.float32, device=images.device)
    # sample in pixel space so that "outside" is black, as in dlib, whatever the images' range
    lo = -1.0
    x = images - lo
    out = x.new_zeros(B, images.shape[1], size, size)
    flat = np.flatnonzero(levels < 0)
    if len(flat):
        idx = torch.as_tensor(flat, device=images.device)
        out = out.index_copy(0, idx, _sample(x.index_select(0, idx), m.index_select(0, idx), size))
    for i in np.flatnonzero(levels >= 0):  # big faces: dlib's pyramid, one face at a time
        x0, y0 = (int(v) for v in origins[i])
        sub = x[i:i + 1, :, y0:, x0:]
        for _ in range(int(levels[i]) + 1):
            sub = _pyramid_down_torch(sub)
        out = out.index_copy(0, torch.tensor([int(i)], device=images.device), _sample(sub, m[i:i + 1], size))
    return out + lo
