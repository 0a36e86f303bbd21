"""Landmark previews: each face crop with its landmark drawing laid over it, in a strip, so that a
person sees what was detected before anything runs.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..media.crop import crop_frame, face_crop_box, iris_to_crop, to_crop
from ..media.landmarks import rasterise
from ..protocols import largest_face

PREVIEW_SIZE = 160          # px per face in the landmark previews


def face_preview(crop: np.ndarray, points: np.ndarray | None, iris: np.ndarray | None = None,
                 size: int = PREVIEW_SIZE) -> np.ndarray:
    """A face crop with its landmark drawing (:func:`headpuppet.media.landmarks.rasterise`) laid over it."""
    scale = size / crop.shape[0]
    img = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if points is None:
        return img
    lines = rasterise(np.asarray(points, np.float64) * scale, size,
                      iris=None if iris is None else np.asarray(iris, np.float64) * scale)
    mask = lines.max(axis=2, keepdims=True) > 0
    return np.where(mask, lines, (img * 0.85).astype(np.uint8))


def tile_strip(tiles: list[np.ndarray], size: int = PREVIEW_SIZE) -> np.ndarray:
    if not tiles:
        return np.zeros((size, size, 3), np.uint8)
    gap = np.full((size, 4, 3), 255, np.uint8)
    parts = []
    for i, t in enumerate(tiles):
        if i:
            parts.append(gap)
        parts.append(t)
    return np.concatenate(parts, axis=1)


def _no_face_tile(image: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(h, w)
    sq = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    tile = cv2.resize(sq, (size, size), interpolation=cv2.INTER_AREA)
    tile = (tile * 0.4).astype(np.uint8)
    cv2.line(tile, (8, 8), (size - 8, size - 8), (230, 60, 60), 3)
    cv2.line(tile, (size - 8, 8), (8, size - 8), (230, 60, 60), 3)
    return tile


def detect_preview(images: list[np.ndarray], labels: list[str], detector, max_tiles: int = 8
                   ) -> tuple[np.ndarray, list[str], int]:
    """Find the largest face in each image (independently, as ``prepare_source`` does).

    Returns ``(strip of face crops with landmarks, one message per image, faces found)``.
    """
    tiles, lines, ok = [], [], 0
    for img, label in zip(images, labels):
        detector.reset()
        faces = detector.detect(np.ascontiguousarray(img))
        if not faces:
            lines.append(f"no face found in {label}")
            tile = _no_face_tile(img)
        else:
            ok += 1
            face = largest_face(faces)
            box = face_crop_box(face.points, img.shape[:2])
            crop = crop_frame(img, box, PREVIEW_SIZE)
            pts = to_crop(face.points, box, PREVIEW_SIZE)
            iris = iris_to_crop(face.iris, box, PREVIEW_SIZE) if face.iris is not None else None
            tile = face_preview(crop, pts, iris)
            lines.append(f"{label}: face found" + (f" ({len(faces)} faces; the largest is used)" if len(faces) > 1 else ""))
        if len(tiles) < max_tiles:
            tiles.append(tile)
    return tile_strip(tiles), lines, ok
