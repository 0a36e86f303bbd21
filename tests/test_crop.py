"""headpuppet.media.crop: one stable square box per video, padded crops, exact coordinate maps."""

from __future__ import annotations

import numpy as np
import pytest

from headpuppet.media.crop import (CropBox, crop_frame, face_crop_box, from_crop, iris_from_crop, iris_to_crop,
                             to_crop)


def _face(cx=100.0, cy=120.0, w=80.0, h=90.0, seed=0) -> np.ndarray:
    """68 points filling a w x h box centred at (cx, cy) (the exact layout does not matter here)."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform(-0.5, 0.5, size=(68, 2)) * [w, h]
    pts[0] = [-w / 2, -h / 2]
    pts[1] = [w / 2, h / 2]
    return (pts + [cx, cy]).astype(np.float32)


def test_box_single_frame_is_square_enlarged_and_shifted_up():
    pts = _face(100, 120, 80, 90)
    box = face_crop_box(pts, (240, 320), scale=2.0, shift_up=0.1)
    assert box.side == 180  # 2 x max(80, 90)
    assert box.x0 + box.side / 2 == pytest.approx(100, abs=0.5)
    assert box.y0 + box.side / 2 == pytest.approx(120 - 9, abs=0.5)  # up by 0.1 x 90
    # the whole landmark box is inside the crop
    assert box.x0 <= 60 and box.x0 + box.side >= 140 and box.y0 <= 75 and box.y0 + box.side >= 165


def test_box_is_stable_across_frames_and_robust_to_an_outlier():
    frames = [_face(100 + 2 * np.sin(t), 120 + 2 * np.cos(t), 80, 90, seed=t) for t in range(20)]
    clean = face_crop_box(np.stack(frames), (240, 320))
    frames[7] = _face(300, 20, 80, 90)  # one wild detection far away
    noisy = face_crop_box(np.stack(frames), (240, 320))
    assert abs(noisy.x0 - clean.x0) <= 2 and abs(noisy.y0 - clean.y0) <= 2 and noisy.side == clean.side
    assert face_crop_box(np.stack(frames)[:1], (240, 320)) == face_crop_box(frames[0], (240, 320))


def test_box_rejects_bad_points():
    with pytest.raises(ValueError):
        face_crop_box(np.zeros((5, 2)), (10, 10))
    bad = _face()
    bad[3] = np.nan
    with pytest.raises(ValueError):
        face_crop_box(bad, (240, 320))


def test_crop_inside_frame_matches_resize():
    import cv2

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, size=(100, 120, 3), dtype=np.uint8)
    box = CropBox(10, 20, 64)
    out = crop_frame(frame, box, 32)
    ref = cv2.resize(frame[20:84, 10:74], (32, 32), interpolation=cv2.INTER_AREA)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out, ref)
    same = crop_frame(frame, box, 64)
    assert np.array_equal(same, frame[20:84, 10:74])


def test_crop_outside_frame_is_padded():
    frame = np.full((50, 60, 3), 200, np.uint8)
    box = CropBox(-10, -20, 40)  # top 20 rows and left 10 columns are outside
    black = crop_frame(frame, box, 40)
    assert (black[:20] == 0).all() and (black[:, :10] == 0).all()
    assert (black[20:, 10:] == 200).all()
    edge = crop_frame(frame, box, 40, pad="edge")
    assert (edge == 200).all()
    away = crop_frame(frame, CropBox(500, 500, 30), 16)
    assert away.shape == (16, 16, 3) and (away == 0).all()


def test_crop_of_astronaut_face_region(astronaut):
    # the crop of a box follows the frame content: a marked pixel lands where to_crop puts it
    frame = astronaut.copy()
    frame[150:154, 220:224] = [255, 0, 0]
    box = CropBox(150, 80, 200)
    out = crop_frame(frame, box, 100)
    x, y = to_crop(np.array([222.0, 152.0]), box, 100)
    assert out[int(y), int(x), 0] > 150 and out[int(y), int(x), 1] < 100


def test_to_from_crop_round_trip():
    rng = np.random.default_rng(2)
    pts = rng.uniform(-50, 400, size=(5, 68, 2)).astype(np.float32)
    box = CropBox(-13, 27, 211)
    crop = to_crop(pts, box, 256)
    assert crop.dtype == np.float32 and crop.shape == pts.shape
    assert np.allclose(from_crop(crop, box, 256), pts, atol=1e-3)
    # the box corners map to the crop corners
    assert np.allclose(to_crop(np.array([[-13, 27], [198, 238]]), box, 256), [[0, 0], [256, 256]])
    iris = np.array([[50.0, 60.0, 4.0], [90.0, 61.0, 4.5]], np.float32)
    ic = iris_to_crop(iris, box, 256)
    assert ic[0, 2] == pytest.approx(4.0 * 256 / 211)
    assert np.allclose(iris_from_crop(ic, box, 256), iris, atol=1e-4)
