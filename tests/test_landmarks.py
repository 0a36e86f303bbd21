"""The 68-point convention and the landmark image (headpuppet.media.landmarks)."""

from __future__ import annotations

import numpy as np
import pytest

from headpuppet.media.landmarks import (IRIS_COLOUR, PART_BY_NAME, PARTS, bbox, default_thickness, eye_centres,
                                  inter_ocular, rasterise)


def _arc(cx, cy, rx, ry, a0, a1, n, closed=False):
    a = np.linspace(a0, a1, n, endpoint=not closed)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], 1)


def synthetic_face(size: float = 1.0) -> np.ndarray:
    """A cartoon face in iBUG order in a unit square, scaled to ``size`` pixels (y grows downwards)."""
    pts = np.concatenate([
        _arc(0.5, 0.45, 0.38, 0.45, np.pi, 0, 17),                # jaw 0-16: image-left ear, chin, right ear
        np.stack([np.linspace(0.2, 0.42, 5), [0.3, 0.26, 0.25, 0.26, 0.28]], 1),   # right brow 17-21
        np.stack([np.linspace(0.58, 0.8, 5), [0.28, 0.26, 0.25, 0.26, 0.3]], 1),   # left brow 22-26
        np.stack([np.full(4, 0.5), np.linspace(0.36, 0.58, 4)], 1),                # nose bridge 27-30
        np.stack([np.linspace(0.42, 0.58, 5), [0.62, 0.64, 0.65, 0.64, 0.62]], 1),  # nostrils 31-35
        _arc(0.32, 0.4, 0.07, 0.03, np.pi, -np.pi, 6, closed=True),  # right eye 36-41 from the outer corner
        _arc(0.68, 0.4, 0.07, 0.03, np.pi, -np.pi, 6, closed=True),  # left eye 42-47
        _arc(0.5, 0.78, 0.15, 0.07, np.pi, -np.pi, 12, closed=True),  # outer lips 48-59
        _arc(0.5, 0.78, 0.1, 0.03, np.pi, -np.pi, 8, closed=True),   # inner lips 60-67
    ]).astype(np.float32)
    assert pts.shape == (68, 2)
    return pts * size


def _has_colour(image: np.ndarray, colour) -> bool:
    return bool(np.all(image == np.array(colour, np.uint8), axis=-1).any())


def test_parts_cover_the_68_points_and_colours_are_distinct():
    covered = sorted({i for p in PARTS for i in p.indices})
    assert covered == list(range(68))
    colours = [p.colour for p in PARTS] + [IRIS_COLOUR]
    assert len(set(colours)) == len(colours)
    assert (0, 0, 0) not in colours  # black is the background
    assert PART_BY_NAME["nostrils"].indices == (30, 31, 32, 33, 34, 35) and PART_BY_NAME["nostrils"].closed
    assert not PART_BY_NAME["jaw"].closed and PART_BY_NAME["right_eye"].closed


def test_black_background_and_every_part_drawn_in_its_colour():
    size = 256
    img = rasterise(synthetic_face(size), size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    lit = img.any(-1)
    assert 0.01 < lit.mean() < 0.2  # thin lines on black
    assert not img[:5, :5].any() and not img[-5:, -5:].any()  # corners stay black
    for part in PARTS:
        assert _has_colour(img, part.colour), part.name
    # nothing lit in the empty band between the brows and the hairline
    assert not img[: int(0.2 * size), int(0.3 * size): int(0.7 * size)].any()


def test_colours_sit_where_their_part_is():
    size = 256
    pts = synthetic_face(size)
    img = rasterise(pts, size)
    for name, idx in (("right_eye", 36), ("left_eye", 45), ("jaw", 8), ("inner_lips", 62)):
        x, y = np.round(pts[idx]).astype(int)
        window = img[y - 2: y + 3, x - 2: x + 3]
        assert _has_colour(window, PART_BY_NAME[name].colour), name


def test_thickness_grows_with_resolution():
    assert default_thickness(64) == 1 and default_thickness(128) == 1
    assert default_thickness(256) == 2 and default_thickness(512) == 4
    lit = {s: rasterise(synthetic_face(s), s).any(-1).mean() for s in (128, 512)}
    # scaled thickness keeps the drawing's look: the lit fraction stays about the same ...
    assert 0.6 < lit[512] / lit[128] < 1.6
    # ... whereas a fixed 1-pixel line would all but vanish at 512
    thin = rasterise(synthetic_face(512), 512, thickness=1).any(-1).mean()
    assert thin < 0.5 * lit[512]
    assert rasterise(synthetic_face(256), 256, thickness=6).any(-1).sum() > \
        rasterise(synthetic_face(256), 256, thickness=2).any(-1).sum()


def test_iris_drawn_only_when_asked():
    size = 256
    pts = synthetic_face(size)
    centres = eye_centres(pts)
    assert not _has_colour(rasterise(pts, size), IRIS_COLOUR)
    iris = np.concatenate([centres, np.full((2, 1), 5.0, np.float32)], 1)  # (2, 3)
    img = rasterise(pts, size, iris=iris)
    for cx, cy in np.round(centres).astype(int):
        assert tuple(img[cy, cx]) == IRIS_COLOUR
    with pytest.raises(ValueError):
        rasterise(pts, size, iris=np.zeros((2, 2)))


def test_points_outside_the_image_do_not_crash():
    size = 64
    pts = synthetic_face(size)
    shifted = pts + np.array([size * 0.6, 0], np.float32)  # half the face leaves the image
    img = rasterise(shifted, size)
    assert img.any() and not img[:, : int(0.3 * size)].any()
    far = rasterise(pts * 1e9 - 5e8, size, iris=np.array([[1e12, -1e12, 1e9], [10, 10, 3]], np.float32))
    assert far.shape == (size, size, 3)
    assert not rasterise(pts + 10 * size, size).any()  # entirely outside: nothing drawn


def test_a_part_with_missing_points_is_left_out():
    size = 256
    pts = synthetic_face(size)
    pts[40] = np.nan
    img = rasterise(pts, size)
    assert not _has_colour(img, PART_BY_NAME["right_eye"].colour)
    assert _has_colour(img, PART_BY_NAME["left_eye"].colour)


def test_subpixel_motion_changes_the_image():
    # points are drawn with fractional precision, so a half-pixel move is visible to the generator
    size = 128
    pts = synthetic_face(size)
    assert not np.array_equal(rasterise(pts, size), rasterise(pts + 0.5, size))


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        rasterise(np.zeros((5, 2)), 64)
    with pytest.raises(ValueError):
        rasterise(synthetic_face(64), 0)


def test_geometry_helpers():
    pts = synthetic_face(100)
    c = eye_centres(pts)
    assert c.shape == (2, 2)
    np.testing.assert_allclose(c[0], pts[36:42].mean(0), rtol=1e-5)
    assert c[0, 0] < c[1, 0]  # the subject's right eye is on the image's left
    assert inter_ocular(pts) == pytest.approx(float(np.linalg.norm(pts[45] - pts[36])))
    batch = np.stack([pts, pts * 2])
    np.testing.assert_allclose(inter_ocular(batch), [inter_ocular(pts), 2 * inter_ocular(pts)], rtol=1e-5)
    assert eye_centres(batch).shape == (2, 2, 2)
    x0, y0, x1, y1 = bbox(pts)
    assert (x0, y0) == pytest.approx(tuple(pts.min(0))) and (x1, y1) == pytest.approx(tuple(pts.max(0)))
