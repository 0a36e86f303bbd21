"""Training-free comparators for ``headpuppet evaluate``.

The paper (Zakharov et al. 2019, sections 1-2 and 4) positions itself against warping-based
reenactment (X2Face and the like), which moves the pixels of the source photo by the motion of the
driver. These baselines give every table such a comparator without any training:

* ``copy``: the source shot itself (the K shot whose landmarks are closest to the target's, so more
  shots help it the way they help a model): what a method scores for doing nothing;
* ``warp`` (thin-plate spline) and ``warp-pwa`` (piecewise-affine on a Delaunay triangulation):
  that same shot warped so its 68 landmarks land on the target's, image corners and edge midpoints
  pinned so the background stays put.

A method follows :class:`headpuppet.evaluation.protocol.Method`: ``prepare(shots, points, iris)`` once per
video, then ``render(state, points, iris)`` for batches of target poses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import HeadpuppetError

BASELINES = ("copy", "warp", "warp-pwa")


def _normalise(points: np.ndarray) -> np.ndarray:
    """``(..., 68, 2)`` -> centred and scaled to unit RMS radius, to compare shapes across scale."""
    c = points - points.mean(-2, keepdims=True)
    return c / np.sqrt((c ** 2).sum(-1).mean(-1))[..., None, None].clip(1e-6)


def nearest_shot(shot_points: np.ndarray, target_points: np.ndarray) -> np.ndarray:
    """Index of the shot closest to each target. ``(K, 68, 2)``, ``(B, 68, 2)`` -> ``(B,)`` int.

    Distance mixes shape (normalised landmarks) and placement (raw pixels relative to the face
    size), so a shot with the same expression but a different head position is not preferred over
    one that is simply in the right place."""
    ns, nt = _normalise(shot_points), _normalise(target_points)
    shape = ((nt[:, None] - ns[None]) ** 2).sum(-1).mean(-1)  # (B, K)
    scale = np.sqrt(((target_points - target_points.mean(-2, keepdims=True)) ** 2).sum(-1).mean(-1))  # (B,)
    place = (((target_points[:, None] - shot_points[None]) ** 2).sum(-1).mean(-1)) / (scale[:, None] ** 2 + 1e-6)
    return np.argmin(shape + place, axis=1)


def _anchors(size: int) -> np.ndarray:
    """Eight fixed points on the image border: corners and edge midpoints."""
    m = size - 1
    h = m / 2
    return np.array([[0, 0], [h, 0], [m, 0], [m, h], [m, m], [h, m], [0, m], [0, h]], dtype=np.float64)


def tps_warp(image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray, reg: float = 1e-3) -> np.ndarray:
    """Thin-plate-spline warp moving ``src_points`` of ``image`` onto ``dst_points``.

    ``image`` (H, W, 3) uint8; points (N, 2) px. Solved backwards (for each output pixel, where to
    sample in the source), so the output has no holes; image borders are pinned.
    """
    # cv2, scipy, torch: lazy, the metrics plugin imports headpuppet.evaluation at every CLI start-up
    # (at the top they took `headpuppet --help` from 0.5 s to 2.6 s, measured)
    import cv2
    import torch
    import torch.nn.functional as F
    from scipy.interpolate import RBFInterpolator

    h, w = image.shape[:2]
    anchors = _anchors(max(h, w))
    dst = np.concatenate([np.asarray(dst_points, np.float64), anchors])  # (N+8, 2) output positions
    src = np.concatenate([np.asarray(src_points, np.float64), anchors])  # where they sample from
    # normalise coordinates so the regulariser means the same at every image size
    s = float(max(h, w))
    # scipy's spline (bench/library_choices.py: equal to our former solve within 1e-10 px, 3.1x faster);
    # its kernel r^2 log r is half of U = r^2 log r^2, so the same regularisation is half the smoothing
    spline = RBFInterpolator(dst / s, src / s, kernel="thin_plate_spline", smoothing=reg / 2, degree=1)
    # The spline is smooth, so evaluate it on a grid of at most 64x64 nodes and interpolate
    # bilinearly (align_corners: nodes sit exactly on the first and last pixel) instead of per pixel.
    gh, gw = min(h, 64), min(w, 64)
    ys, xs = np.meshgrid(np.linspace(0, h - 1, gh), np.linspace(0, w - 1, gw), indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], 1) / s  # (gh*gw, 2)
    mapped = spline(grid) * s  # (gh*gw, 2) source px
    mapped = mapped.reshape(gh, gw, 2).astype(np.float32)
    if (gh, gw) != (h, w):
        t = torch.from_numpy(mapped).permute(2, 0, 1)[None]  # (1, 2, gh, gw)
        mapped = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=True)[0].permute(1, 2, 0).numpy()
    return cv2.remap(np.ascontiguousarray(image), mapped[..., 0], mapped[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def piecewise_affine_warp(image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray) -> np.ndarray:
    """Piecewise-affine warp (Delaunay triangles of the destination landmarks + border anchors)."""
    from skimage.transform import PiecewiseAffineTransform, warp  # lazy, as in tps_warp: CLI start-up

    h, w = image.shape[:2]
    anchors = _anchors(max(h, w))
    dst = np.concatenate([np.asarray(dst_points, np.float64), anchors])
    src = np.concatenate([np.asarray(src_points, np.float64), anchors])
    # skimage's warp wants the inverse map: output coordinates -> input coordinates
    if hasattr(PiecewiseAffineTransform, "from_estimate"):  # scikit-image >= 0.26
        t = PiecewiseAffineTransform.from_estimate(dst, src)
        if not t:
            return image.copy()
    else:
        t = PiecewiseAffineTransform()
        if not t.estimate(dst, src):
            return image.copy()
    out = warp(image, t, output_shape=(h, w), order=1, mode="edge", preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@dataclass
class _Shots:
    frames: np.ndarray  # (K, S, S, 3) uint8
    points: np.ndarray  # (K, 68, 2)


class CopyBaseline:
    """The source shot itself (the one closest in landmarks to each target)."""

    name = "copy"

    def prepare(self, shots: np.ndarray, points: np.ndarray, iris=None, video_id: str = "") -> _Shots:
        return _Shots(np.asarray(shots), np.asarray(points, np.float32))

    def render(self, state: _Shots, points: np.ndarray, iris=None) -> np.ndarray:
        idx = nearest_shot(state.points, np.asarray(points, np.float32))
        return state.frames[idx].copy()  # (B, S, S, 3)


class WarpBaseline(CopyBaseline):
    """The closest source shot warped by the landmark motion (``method``: ``tps`` or ``pwa``)."""

    def __init__(self, method: str = "tps"):
        if method not in ("tps", "pwa"):
            raise ValueError(f"warp method must be 'tps' or 'pwa', got {method!r}")
        self.method = method
        self.name = "warp" if method == "tps" else "warp-pwa"

    def render(self, state: _Shots, points: np.ndarray, iris=None) -> np.ndarray:
        points = np.asarray(points, np.float32)
        idx = nearest_shot(state.points, points)
        fn = tps_warp if self.method == "tps" else piecewise_affine_warp
        return np.stack([fn(state.frames[i], state.points[i], p) for i, p in zip(idx, points)])


def make_baseline(name: str):
    """``copy`` | ``warp`` | ``warp-pwa`` -> a method object."""
    if name == "copy":
        return CopyBaseline()
    if name == "warp":
        return WarpBaseline("tps")
    if name == "warp-pwa":
        return WarpBaseline("pwa")
    raise HeadpuppetError(f"unknown baseline '{name}'; choose from {', '.join(BASELINES)}")
