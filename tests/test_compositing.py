"""Pasting a rendered face back into the full photo (headpuppet.fewshot.compositing, ``--paste-back``)."""

from __future__ import annotations

import numpy as np
import pytest


def test_paste_back_composites_with_a_soft_edge():
    from headpuppet.media.crop import CropBox
    from headpuppet.fewshot.compositing import feather_mask, paste_back

    image = np.full((100, 120, 3), 50, np.uint8)
    crop = np.full((32, 32, 3), 200, np.uint8)
    box = CropBox(90, 20, 40)  # leaves the image on the right
    out = paste_back(image, crop, box)
    assert out.shape == image.shape
    assert (out[:, :85] == 50).all()                 # outside the box: untouched
    assert out[40, 110, 0] == 200                    # well inside: the generated pixels
    assert 50 < out[40, 91, 0] < 200                 # at the box edge: a blend
    m = feather_mask(40)
    assert m.max() == pytest.approx(1.0) and m[0, 0] < 0.05


def test_paste_back_with_landmarks_replaces_only_the_face_and_matches_colour():
    from headpuppet.media.crop import CropBox
    from headpuppet.fewshot.compositing import colour_match, face_mask, paste_back

    ang = np.linspace(0, 2 * np.pi, 69)[:-1]
    pts = (np.stack([np.cos(ang) * 8, np.sin(ang) * 10], 1) + 16).astype(np.float32)  # a face in a 32 px crop
    pts[17:27, 1] = 10  # brows above the middle
    m = face_mask(pts, 32)
    assert m[16, 16] == pytest.approx(1.0, abs=0.05) and m[0, 0] == 0 and m[16, 2] < 0.05
    image = np.full((100, 120, 3), 50, np.uint8)
    crop = np.full((32, 32, 3), 200, np.uint8)
    box = CropBox(40, 20, 40)
    out = paste_back(image, crop, box, points=pts, match_colour=False)
    assert out[40, 60, 0] == 200                      # the face centre: generated
    assert (out[20:24, 40:44] == 50).all()            # the crop's corner, outside the face: the photo
    assert (out[:, :40] == 50).all() and (out[:, 80:] == 50).all()
    # colour matching moves the generated face to the photo's mean and spread inside the mask
    rng = np.random.default_rng(0)
    gen = rng.integers(100, 140, (32, 32, 3)).astype(np.uint8)
    ref = rng.integers(30, 90, (32, 32, 3)).astype(np.uint8)
    matched = colour_match(gen, ref, m)
    w = m[..., None] / m.sum()
    assert abs(float((matched * w).sum() / 3 - (ref * w).sum() / 3)) < 3
    assert abs(float((gen * w).sum() / 3 - (ref * w).sum() / 3)) > 30
