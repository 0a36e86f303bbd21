"""Square face crops that stay still over a video, and the landmark maps into and out of them.

Zakharov et al. 2019, Sec. 4 ("Datasets"): training frames are face crops of VoxCeleb videos at a
fixed resolution, with the 68 landmarks of each frame expressed in the crop. The crop of a video is
ONE box for all its frames, so head motion stays in the frames (the generator must learn to move
the head) instead of being cancelled by a per-frame crop, and the crops do not jitter.

How the box is chosen (:func:`face_crop_box`):

* per frame, the bounding box of the 68 landmarks gives a centre and a size ``max(w, h)``;
* the video's centre is the per-coordinate **median** of the frame centres (robust to a few bad
  detections), moved **up** by ``shift_up * size``: the 68 points stop at the eyebrows, so their
  box centre sits near the nose and the forehead and hair would otherwise be cut;
* the video's face size is a high **percentile** (90th) of the frame sizes, so the crop keeps the
  face whole when it comes closer for a while, without letting a single outlier blow it up;
* ``side = scale * size`` (1.8 by default: the whole head, some hair and neck), rounded to whole
  pixels. The box may extend past the frame; :func:`crop_frame` pads what lies outside.

Coordinates are continuous pixel coordinates in which the image spans ``[0, W] x [0, H]``; in those,
:func:`to_crop` and :func:`from_crop` are exact inverse affine maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["CropBox", "face_crop_box", "crop_frame", "to_crop", "from_crop", "iris_to_crop", "iris_from_crop"]


@dataclass(frozen=True)
class CropBox:
    """A square box in frame pixels: top-left ``(x0, y0)`` and side ``side`` (may leave the frame)."""

    x0: int
    y0: int
    side: int

    def as_list(self) -> list[int]:
        return [int(self.x0), int(self.y0), int(self.side)]

    @classmethod
    def from_list(cls, values) -> "CropBox":
        x0, y0, side = (int(v) for v in values)
        return cls(x0, y0, side)


def face_crop_box(points: np.ndarray, frame_hw: tuple[int, int], scale: float = 1.8, shift_up: float = 0.1,
                  size_percentile: float = 90.0) -> CropBox:
    """One square box around the face for all frames of a video.

    Args:
        points: ``(T, 68, 2)`` or ``(68, 2)`` landmark pixels ``(x, y)`` of the kept frames.
        frame_hw: ``(H, W)`` of the frames (used only to refuse empty input sensibly; the box may
            extend past the frame).
        scale: box side as a multiple of the face size (max of the landmark box's width and height).
        shift_up: move the centre up by this fraction of the face size (forehead).
        size_percentile: which percentile of the per-frame face sizes sets the video's face size.

    Returns:
        A :class:`CropBox` with integer corner and side (side >= 2).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[1:] != (68, 2) or pts.shape[0] == 0:
        raise ValueError(f"points must be (T, 68, 2) or (68, 2) with T >= 1, got {np.shape(points)}")
    if not np.isfinite(pts).all():
        raise ValueError("points contain NaN or inf; drop frames without a face first")
    lo, hi = pts.min(axis=1), pts.max(axis=1)  # (T, 2)
    centres = (lo + hi) / 2  # (T, 2)
    sizes = (hi - lo).max(axis=1)  # (T,)
    size = float(np.percentile(sizes, size_percentile))
    size = max(size, 1.0)
    cx, cy = np.median(centres, axis=0)
    cy -= shift_up * size
    side = max(2, int(round(scale * size)))
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    return CropBox(x0, y0, side)


def crop_frame(frame: np.ndarray, box: CropBox, size: int, pad: str = "black") -> np.ndarray:
    """Cut ``box`` out of ``frame`` and resize it to ``(size, size, 3)`` uint8.

    Parts of the box outside the frame are padded: ``pad="black"`` (default: zeros, honest about
    where there is no picture; the box is fixed per video so the padded band is static) or
    ``pad="edge"`` (replicate the border pixels). Resizing uses ``cv2.INTER_AREA`` (the right filter
    for downscaling, which is the usual case).
    """
    if pad not in ("black", "edge"):
        raise ValueError(f"pad must be 'black' or 'edge', got {pad!r}")
    h, w = frame.shape[:2]
    x0, y0, s = int(box.x0), int(box.y0), int(box.side)
    x1, y1 = x0 + s, y0 + s
    # the part of the box inside the frame
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if ix0 >= ix1 or iy0 >= iy1:  # box entirely outside: nothing to show
        region = np.zeros((s, s, 3), dtype=np.uint8)
        if pad == "edge":
            cx, cy = min(max(ix0, 0), w - 1), min(max(iy0, 0), h - 1)
            region[:] = frame[cy, cx]
    else:
        region = frame[iy0:iy1, ix0:ix1]
        top, left, bottom, right = iy0 - y0, ix0 - x0, y1 - iy1, x1 - ix1
        if top or left or bottom or right:
            border = cv2.BORDER_CONSTANT if pad == "black" else cv2.BORDER_REPLICATE
            region = cv2.copyMakeBorder(np.ascontiguousarray(region), top, bottom, left, right, border, value=0)
    if s != size:
        interp = cv2.INTER_AREA if s > size else cv2.INTER_LINEAR
        region = cv2.resize(np.ascontiguousarray(region), (size, size), interpolation=interp)
    return np.ascontiguousarray(region, dtype=np.uint8)  # (size, size, 3)


def to_crop(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Frame pixels -> crop pixels, for any ``(..., 2)`` array of ``(x, y)``; float32."""
    p = np.asarray(points, dtype=np.float64)
    k = size / box.side
    return ((p - np.array([box.x0, box.y0], dtype=np.float64)) * k).astype(np.float32)


def from_crop(points: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Crop pixels -> frame pixels (the exact inverse of :func:`to_crop`); float32."""
    p = np.asarray(points, dtype=np.float64)
    k = box.side / size
    return (p * k + np.array([box.x0, box.y0], dtype=np.float64)).astype(np.float32)


def iris_to_crop(iris: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """``(..., 3)`` rows ``(cx, cy, r)`` in frame pixels -> crop pixels (centre mapped, radius scaled)."""
    i = np.asarray(iris, dtype=np.float32)
    out = np.empty_like(i)
    out[..., :2] = to_crop(i[..., :2], box, size)
    out[..., 2] = i[..., 2] * (size / box.side)
    return out


def iris_from_crop(iris: np.ndarray, box: CropBox, size: int) -> np.ndarray:
    """Inverse of :func:`iris_to_crop`."""
    i = np.asarray(iris, dtype=np.float32)
    out = np.empty_like(i)
    out[..., :2] = from_crop(i[..., :2], box, size)
    out[..., 2] = i[..., 2] * (box.side / size)
    return out
