"""Putting a rendered face crop back into the full source photo (``--paste-back``).

The generator draws an ``S x S`` crop; :func:`paste_back` scales it to the crop box in the photo
and blends it in through a feathered mask: the convex hull of the face landmarks
(:func:`face_mask`), after matching the crop's colours to the photo's (:func:`colour_match`), or,
without landmarks, the whole square with a soft edge (:func:`feather_mask`). Images are
``(H, W, 3) uint8 RGB``; landmarks ``(68, 2)`` crop pixels.
"""

from __future__ import annotations

import cv2
import numpy as np


def feather_mask(side: int, feather: float = 0.12) -> np.ndarray:
    """``(side, side)`` float32 in [0, 1]: 1 inside, a smooth ramp over the outer ``feather`` fraction."""
    r = max(1.0, feather * side)
    d = np.minimum(np.arange(side) + 0.5, side - np.arange(side) - 0.5)  # distance to the nearest edge
    ramp = np.clip(d / r, 0.0, 1.0)
    ramp = ramp * ramp * (3 - 2 * ramp)                                   # smoothstep
    return np.outer(ramp, ramp).astype(np.float32)


def face_mask(points: np.ndarray, side: int, feather: float = 0.06) -> np.ndarray:
    """``(side, side)`` float32 in [0, 1]: the face region of one or more landmark sets, feathered.

    ``points`` ``(68, 2)`` or ``(n, 68, 2)`` in pixels of a ``side x side`` crop. The region is the
    convex hull of the landmarks with the eyebrows raised by a third of the brow-to-chin height (so
    the forehead is in), the union over the sets, blurred over ``feather * side`` pixels inwards:
    the edge of the mask lies inside the hull, so nothing outside the face is replaced.
    """
    pts = np.asarray(points, np.float32).reshape(-1, 68, 2)
    mask = np.zeros((side, side), np.float32)
    for p in pts:
        if not np.isfinite(p).all():
            continue
        brows = p[17:27].copy()
        height = p[8, 1] - brows[:, 1].mean()                 # brow-to-chin, px
        brows[:, 1] -= height / 3
        hull = cv2.convexHull(np.concatenate([p, brows]).round().astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 1.0)
    r = max(1, int(round(feather * side)))
    if mask.any():
        mask = cv2.erode(mask, np.ones((r, r), np.uint8))   # the blur must not reach past the hull
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=r / 2)
    return np.clip(mask, 0, 1)


def colour_match(crop: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift ``crop``'s colours so that, inside ``mask``, their mean and spread in Lab equal
    ``reference``'s (the photo under the pasted face): a generated face takes the photo's light."""
    w = mask[..., None].astype(np.float32)
    if w.sum() < 16:
        return crop
    a = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    b = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    n = w.sum()
    ma, mb = (a * w).sum((0, 1)) / n, (b * w).sum((0, 1)) / n
    sa = np.sqrt((((a - ma) ** 2) * w).sum((0, 1)) / n) + 1e-3
    sb = np.sqrt((((b - mb) ** 2) * w).sum((0, 1)) / n) + 1e-3
    out = (a - ma) * np.clip(sb / sa, 0.5, 2.0) + mb
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def paste_back(image: np.ndarray, crop: np.ndarray, box, feather: float = 0.12,
               points: np.ndarray | None = None, match_colour: bool = True) -> np.ndarray:
    """Composite the generated ``crop`` ``(S, S, 3)`` into ``image`` at ``box``.

    With ``points`` (``(68, 2)`` or ``(n, 68, 2)`` crop px: the face in ``crop`` and, usually, the
    source's own face) only the feathered face region is replaced (:func:`face_mask`), after
    :func:`colour_match` against the photo, so the crop's square never shows; without them, the
    whole square with a feathered edge.
    """
    h, w = image.shape[:2]
    side = int(box.side)
    big = cv2.resize(crop, (side, side), interpolation=cv2.INTER_LINEAR if side > crop.shape[0] else cv2.INTER_AREA)
    if points is not None:
        pts = np.asarray(points, np.float32) * (side / float(crop.shape[0]))
        mask = face_mask(pts, side)
    else:
        mask = feather_mask(side, feather)
    x0, y0 = int(box.x0), int(box.y0)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    out = image.copy()
    if ix0 >= ix1 or iy0 >= iy1:
        return out
    sub = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
    region = out[iy0:iy1, ix0:ix1]
    patch, m = big[sub], mask[sub]
    if points is not None and match_colour:
        patch = colour_match(np.ascontiguousarray(patch), np.ascontiguousarray(region), m)
    m = m[..., None]
    out[iy0:iy1, ix0:ix1] = (m * patch.astype(np.float32) + (1 - m) * region.astype(np.float32)).round().clip(0, 255).astype(np.uint8)
    return out

