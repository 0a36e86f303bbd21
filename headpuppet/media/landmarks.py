"""The 68-point landmark convention and the landmark image ``y`` the networks see.

Zakharov et al. 2019, Sec. 3.1 / Fig. 2: "the landmarks are rasterized into three-channel images
using a predefined set of colors to connect certain landmarks with line segments". This module
fixes that set: which points form which part (iBUG 300-W / Multi-PIE 68-point order, the order
of the paper's detector FAN), whether a part is drawn as an open or a closed polyline, and one
colour per part. Optional iris circles (from detectors with an iris model) are drawn in their own
colour so that gaze reaches the generator; the paper has no irises, so they are opt-in.

Parts, indices and colours (RGB), "right" being the subject's right (the image's left):

=============  ==============================  ========  ===============
part           indices                         closed    colour
=============  ==============================  ========  ===============
jaw            0-16                            no        (0, 255, 0)      green
right_brow     17-21                           no        (255, 128, 0)    orange
left_brow      22-26                           no        (255, 255, 0)    yellow
nose_bridge    27-30                           no        (0, 0, 255)      blue
nostrils       30-35 (30 -> 31 ... 35 -> 30)   yes       (0, 255, 255)    cyan
right_eye      36-41                           yes       (255, 0, 0)      red
left_eye       42-47                           yes       (255, 0, 255)    magenta
outer_lips     48-59                           yes       (128, 0, 255)    violet
inner_lips     60-67                           yes       (255, 128, 192)  pink
=============  ==============================  ========  ===============

Irises (both eyes): filled circles in white ``IRIS_COLOUR`` = (255, 255, 255).

The nostrils follow the usual drawing (dlib's ``render_face_detections``): the open polyline
31 ... 35 joined at both ends to the nose tip 30, which makes it the closed loop 30 ... 35.

Only numpy and OpenCV here, so data loading and detectors can use it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NUM_POINTS = 68


@dataclass(frozen=True)
class Part:
    """One group of landmarks drawn as one polyline."""

    name: str
    indices: tuple[int, ...]
    closed: bool
    colour: tuple[int, int, int]  # RGB


PARTS: tuple[Part, ...] = (
    Part("jaw", tuple(range(0, 17)), False, (0, 255, 0)),
    Part("right_brow", tuple(range(17, 22)), False, (255, 128, 0)),
    Part("left_brow", tuple(range(22, 27)), False, (255, 255, 0)),
    Part("nose_bridge", tuple(range(27, 31)), False, (0, 0, 255)),
    Part("nostrils", tuple(range(30, 36)), True, (0, 255, 255)),
    Part("right_eye", tuple(range(36, 42)), True, (255, 0, 0)),
    Part("left_eye", tuple(range(42, 48)), True, (255, 0, 255)),
    Part("outer_lips", tuple(range(48, 60)), True, (128, 0, 255)),
    Part("inner_lips", tuple(range(60, 68)), True, (255, 128, 192)),
)
#: name -> Part
PART_BY_NAME: dict[str, Part] = {p.name: p for p in PARTS}
IRIS_COLOUR: tuple[int, int, int] = (255, 255, 255)

RIGHT_EYE = slice(36, 42)
LEFT_EYE = slice(42, 48)
#: MIRROR[i]: the point that landmark i becomes in a horizontally mirrored face (300-W numbering:
#: the jaw reverses, right and left brows, eyes and nostrils swap, the nose bridge and the lips'
#: middle points stay)
MIRROR: tuple[int, ...] = (
    tuple(range(16, -1, -1))                                   # jaw 0..16 -> 16..0
    + tuple(range(26, 21, -1)) + tuple(range(21, 16, -1))      # brows 17..21 <-> 26..22
    + (27, 28, 29, 30)                                         # nose bridge
    + (35, 34, 33, 32, 31)                                     # nostrils 31..35 -> 35..31
    + (45, 44, 43, 42, 47, 46) + (39, 38, 37, 36, 41, 40)      # eyes: corners, lids
    + (54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55)         # outer lips
    + (64, 63, 62, 61, 60, 67, 66, 65)                         # inner lips
)


def mirror_points(points: np.ndarray, size: float) -> np.ndarray:
    """Landmarks ``(..., 68, 2)`` of the same face in the image mirrored left-right (width ``size``
    in the continuous pixel convention: x -> size - x), renumbered with :data:`MIRROR` so that, e.g.,
    the right eye is still points 36-41."""
    points = np.asarray(points)
    out = points[..., list(MIRROR), :].copy()
    out[..., 0] = size - out[..., 0]
    return out


def mirror_iris(iris: np.ndarray, size: float) -> np.ndarray:
    """Iris rows ``(..., 2, 3)`` ``(cx, cy, r)``, right eye first, in the mirrored image."""
    iris = np.asarray(iris)
    out = iris[..., ::-1, :].copy()
    out[..., 0] = size - out[..., 0]
    return out


# Outer eye corners: the normaliser of the 300-W landmark error ("inter-ocular distance").
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45

# Sub-pixel precision for cv2 drawing: coordinates are passed as fixed point with 4 fractional bits,
# so a landmark image does not jitter by a whole pixel when a point moves by a fraction of one.
_SHIFT = 4
_ONE = 1 << _SHIFT


def default_thickness(size: int) -> int:
    """Line thickness in pixels for a ``size`` x ``size`` landmark image: 1 up to 191 px, 2 at 256, 4 at 512.

    Scaling with the resolution keeps the drawing looking the same at every training size.
    """
    return max(1, int(round(size / 128)))


def _check_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (NUM_POINTS, 2):
        raise ValueError(f"landmarks must be (68, 2) pixel coordinates, got shape {pts.shape}")
    return pts


def _fixed(xy: np.ndarray, size: int) -> np.ndarray:
    # Far-away points are clamped so the fixed-point int32 conversion cannot overflow; segments
    # towards them still leave the image in the right direction for any sane landmark set.
    lim = 8.0 * max(size, 1)
    xy = np.clip(xy, -lim, lim)
    return np.round(xy * _ONE).astype(np.int32)


def rasterise(points: np.ndarray, size: int, iris: np.ndarray | None = None,
              thickness: int | None = None) -> np.ndarray:
    """Draw the landmark image ``y`` for one face.

    Args:
        points: ``(68, 2)`` pixel coordinates ``(x, y)`` in the ``size`` x ``size`` image (crop
            pixels); points outside the image are fine (their segments are clipped).
        size: side of the square output in pixels.
        iris: optional ``(2, 3)`` rows ``(cx, cy, r)`` (right eye first), drawn as filled circles in
            ``IRIS_COLOUR`` under the eye outlines; ``None`` draws no iris.
        thickness: line thickness in pixels; default :func:`default_thickness`.

    Returns:
        ``(size, size, 3) uint8`` RGB: coloured anti-aliased polylines on black. A part with a
        non-finite point (a detector's missing value) is left out rather than drawn wrongly.
    """
    pts = _check_points(points)
    size = int(size)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    thickness = default_thickness(size) if thickness is None else int(thickness)
    if thickness <= 0:
        raise ValueError(f"thickness must be positive, got {thickness}")
    image = np.zeros((size, size, 3), dtype=np.uint8)

    if iris is not None:
        iris = np.asarray(iris, dtype=np.float64)
        if iris.shape != (2, 3):
            raise ValueError(f"iris must be (2, 3) rows (cx, cy, r), got shape {iris.shape}")
        for cx, cy, r in iris:
            if not np.all(np.isfinite([cx, cy, r])) or r <= 0:
                continue
            centre = _fixed(np.array([cx, cy]), size)
            radius = int(round(min(r, 8.0 * size) * _ONE))
            cv2.circle(image, (int(centre[0]), int(centre[1])), radius, IRIS_COLOUR, thickness=-1,
                       lineType=cv2.LINE_AA, shift=_SHIFT)

    for part in PARTS:
        xy = pts[list(part.indices)]
        if not np.all(np.isfinite(xy)):
            continue
        cv2.polylines(image, [_fixed(xy, size).reshape(-1, 1, 2)], part.closed, part.colour,
                      thickness=thickness, lineType=cv2.LINE_AA, shift=_SHIFT)
    return image


def _check_many(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim < 2 or pts.shape[-2:] != (NUM_POINTS, 2):
        raise ValueError(f"landmarks must be (..., 68, 2) pixel coordinates, got shape {pts.shape}")
    return pts


def eye_centres(points: np.ndarray) -> np.ndarray:
    """Centres (mean of the six contour points) of the right eye (36-41) then the left (42-47).

    ``(68, 2)`` -> ``(2, 2)``; any leading dimensions are kept: ``(T, 68, 2)`` -> ``(T, 2, 2)``.
    """
    pts = _check_many(points)
    return np.stack([pts[..., RIGHT_EYE, :].mean(-2), pts[..., LEFT_EYE, :].mean(-2)], axis=-2).astype(np.float32)


def inter_ocular(points: np.ndarray):
    """Distance in pixels between the outer eye corners 36 and 45.

    This is the normaliser of the 300-W benchmark's landmark error (not the pupil distance, which
    needs irises that not every detector has). ``(68, 2)`` -> float; ``(T, 68, 2)`` -> ``(T,)``.
    """
    pts = _check_many(points)
    d = np.linalg.norm(pts[..., LEFT_EYE_OUTER, :] - pts[..., RIGHT_EYE_OUTER, :], axis=-1)
    return float(d) if d.ndim == 0 else d.astype(np.float32)


def landmark_error(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean point-to-point distance over the reference's inter-ocular distance (the 300-W
    benchmark's normalised error), in float64. ``(..., 68, 2)`` pairs -> ``(...)``."""
    pred, ref = _check_many(pred), _check_many(ref)
    iod = np.linalg.norm(ref[..., LEFT_EYE_OUTER, :] - ref[..., RIGHT_EYE_OUTER, :], axis=-1)
    return np.linalg.norm(pred - ref, axis=-1).mean(-1) / np.maximum(iod, 1e-6)


def bbox(points: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box ``(x0, y0, x1, y1)`` in pixels of one face's ``(68, 2)`` landmarks."""
    pts = _check_points(points)
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    return float(x0), float(y0), float(x1), float(y1)
