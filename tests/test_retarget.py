"""Arithmetic of driver clean-up and relative motion transfer (headpuppet.fewshot.retarget)."""

from __future__ import annotations

import numpy as np
import pytest

from headpuppet.errors import NoFaceError
from headpuppet.fewshot.retarget import (STABLE, bridge_missing, neutral_frame, prepare_track, smooth_track,
                                 transfer_relative, umeyama)


def _face(seed: int, size: float = 60.0, center=(64.0, 64.0), jaw_width: float = 1.0) -> np.ndarray:
    """A plausible 68-point face: a template with per-person shape changes (seeded)."""
    rng = np.random.default_rng(seed)
    p = np.zeros((68, 2))
    a = np.linspace(np.pi * 0.95, np.pi * 0.05, 17)
    p[0:17] = np.stack([np.cos(a) * jaw_width, np.sin(a) * 0.9 + 0.1], 1)        # jaw
    p[17:22] = np.stack([np.linspace(-0.7, -0.2, 5), np.full(5, -0.45)], 1)      # brows
    p[22:27] = np.stack([np.linspace(0.2, 0.7, 5), np.full(5, -0.45)], 1)
    p[27:31] = np.stack([np.zeros(4), np.linspace(-0.3, 0.15, 4)], 1)            # nose bridge
    p[31:36] = np.stack([np.linspace(-0.15, 0.15, 5), np.full(5, 0.22)], 1)      # nostrils
    for k, cx in ((36, -0.4), (42, 0.4)):                                        # eyes
        e = np.linspace(0, 2 * np.pi, 7)[:-1]
        p[k:k + 6] = np.stack([cx + 0.15 * np.cos(np.pi - e), -0.25 + 0.05 * np.sin(e)], 1)
    m = np.linspace(0, 2 * np.pi, 13)[:-1]
    p[48:60] = np.stack([0.3 * np.cos(np.pi - m), 0.5 + 0.1 * np.sin(m)], 1)     # outer lips
    mi = np.linspace(0, 2 * np.pi, 9)[:-1]
    p[60:68] = np.stack([0.2 * np.cos(np.pi - mi), 0.5 + 0.02 * np.sin(mi)], 1)  # inner lips
    p += rng.normal(0, 0.03, p.shape)                                            # this person's shape
    return (p * size + np.asarray(center)).astype(np.float32)


def _rigid(p: np.ndarray, angle: float, scale: float, shift) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    R = np.array([[c, -s], [s, c]])
    mu = p.mean(0)
    return ((p - mu) @ R.T * scale + mu + np.asarray(shift)).astype(np.float32)


def _dist_ratios(p: np.ndarray) -> np.ndarray:
    d = np.linalg.norm(p[:, None] - p[None], axis=-1)
    return d / d[36, 45]


def test_umeyama_recovers_a_similarity():
    p = _face(0)
    q = _rigid(p, 0.3, 1.4, (5, -7))
    S = umeyama(p, q)
    assert S.s == pytest.approx(1.4, rel=1e-5)
    assert S.angle == pytest.approx(0.3, abs=1e-5)
    np.testing.assert_allclose(S.apply(p), q, atol=1e-3)
    np.testing.assert_allclose(S.inverse().apply(q), p, atol=1e-3)


def test_constant_driver_is_identity_on_source():
    drv = np.repeat(_face(1, size=40)[None], 5, 0)
    src = _face(2, size=70, center=(60, 70))
    out, _ = transfer_relative(drv, src, reference=0)
    np.testing.assert_allclose(out, np.repeat(src[None], 5, 0), atol=1e-3)


def test_rigid_driver_moves_source_rigidly_and_keeps_its_shape():
    drv0 = _face(1, size=40, jaw_width=1.3)  # a wide-jawed driver
    src = _face(2, size=70, center=(60, 70), jaw_width=0.8)
    frames = [drv0, _rigid(drv0, 0.2, 1.0, (0, 0)), _rigid(drv0, -0.1, 1.2, (6, -3)), _rigid(drv0, 0, 1, (10, 0))]
    out, _ = transfer_relative(np.stack(frames), src, reference=0)
    for t in range(len(frames)):
        np.testing.assert_allclose(_dist_ratios(out[t]), _dist_ratios(src), atol=1e-3)  # source shape kept
        M = umeyama(src, out[t])
        np.testing.assert_allclose(M.apply(src), out[t], atol=1e-2)                     # a rigid motion
    assert umeyama(src, out[1]).angle == pytest.approx(0.2, abs=1e-4)
    assert umeyama(src, out[2]).s == pytest.approx(1.2, rel=1e-4)
    # a 10 px driver shift becomes 10 px * (source size / driver size), turned by the heads' relative roll
    A = umeyama(drv0[STABLE], src[STABLE])
    np.testing.assert_allclose(out[3] - src, np.tile(A.R @ [10 * A.s, 0], (68, 1)), atol=1e-2)
    # the driver's own (wide-jawed) shape does not leak in, unlike absolute mode
    assert not np.allclose(_dist_ratios(drv0), _dist_ratios(src), atol=1e-2)


def test_mouth_opening_appears_scaled_to_source_size():
    drv0 = _face(3, size=40)
    drv1 = drv0.copy()
    drv1[[56, 57, 58, 65, 66, 67]] += np.array([0, 6], np.float32)  # lower lip down by 6 px
    src = _face(4, size=80, center=(70, 60))
    out, _ = transfer_relative(np.stack([drv0, drv1]), src, reference=0)
    scale = umeyama(drv0[STABLE], src[STABLE]).s
    assert scale == pytest.approx(2.0, rel=0.1)
    moved = out[1] - src
    np.testing.assert_allclose(moved[[56, 57, 58, 65, 66, 67]],
                               np.tile(umeyama(drv0[STABLE], src[STABLE]).R @ [0, 6 * scale], (6, 1)), atol=1e-2)
    still = np.setdiff1d(np.arange(68), [56, 57, 58, 65, 66, 67])
    np.testing.assert_allclose(moved[still], 0, atol=1e-2)


def test_reference_frame_is_the_zero_point():
    base = _face(5, size=40)
    opened = base.copy()
    opened[[65, 66, 67]] += np.array([0, 8], np.float32)
    drv = np.stack([opened, base, opened])
    src = _face(6, size=50)
    assert neutral_frame(drv) == 1
    out, _ = transfer_relative(drv, src, reference=1)
    np.testing.assert_allclose(out[1], src, atol=1e-3)
    assert (out[0][66, 1] - src[66, 1]) > 5


def test_absolute_mode_passes_landmarks_through():
    drv = np.stack([_face(7), _rigid(_face(7), 0.1, 1.0, (2, 2))])
    track = prepare_track(drv, np.array([True, True]), smooth=0, relative=False)
    np.testing.assert_array_equal(track.points, drv)
    assert track.bridged == 0 and track.reference is None


def test_bridge_interpolates_and_counts_missing_frames():
    a, b = _face(8), _face(8) + 10
    pts = np.stack([a, np.full_like(a, np.nan), np.full_like(a, np.nan), b, np.full_like(a, np.nan)])
    found = np.array([True, False, False, True, False])
    out, _, bridged = bridge_missing(pts, found)
    assert bridged == 3
    np.testing.assert_allclose(out[1], a + 10 / 3, atol=1e-4)
    np.testing.assert_allclose(out[2], a + 20 / 3, atol=1e-4)
    np.testing.assert_allclose(out[4], b)  # held after the last face
    with pytest.raises(NoFaceError):
        bridge_missing(pts, np.zeros(5, bool))


def test_smoothing_reduces_jitter_and_keeps_constant_tracks():
    rng = np.random.default_rng(0)
    clean = np.repeat(_face(9)[None], 50, 0)
    noisy = clean + rng.normal(0, 1.0, clean.shape).astype(np.float32)
    sm = smooth_track(noisy, 1.5)
    assert np.abs(sm - clean).mean() < 0.6 * np.abs(noisy - clean).mean()
    np.testing.assert_allclose(smooth_track(clean, 2.0), clean, atol=1e-4)
    np.testing.assert_array_equal(smooth_track(noisy, 0), noisy)


def test_irises_follow_the_eyes():
    drv0 = _face(10, size=40)
    src = _face(11, size=80, center=(70, 60))
    iris_d = np.array([[drv0[36:42, 0].mean(), drv0[36:42, 1].mean(), 3.0],
                       [drv0[42:48, 0].mean(), drv0[42:48, 1].mean(), 3.0]], np.float32)
    iris_s = np.array([[src[36:42, 0].mean(), src[36:42, 1].mean(), 6.0],
                       [src[42:48, 0].mean(), src[42:48, 1].mean(), 6.0]], np.float32)
    look = iris_d.copy()
    look[:, 0] += 2.0  # the driver looks to the side
    pts, iris = transfer_relative(np.stack([drv0, drv0]), src, 0, np.stack([iris_d, look]), iris_s)
    np.testing.assert_allclose(iris[0], iris_s, atol=1e-3)
    scale = umeyama(drv0[STABLE], src[STABLE]).s
    assert (iris[1, :, 0] - iris_s[:, 0]) == pytest.approx([2 * scale] * 2, rel=0.05)
    np.testing.assert_allclose(iris[1, :, 2], 6.0, atol=1e-4)


def test_a_blink_is_not_the_neutral_frame():
    base = _face(12, size=40)
    blink = base.copy()
    blink[[37, 38, 43, 44]] = blink[[41, 40, 47, 46]]  # upper lids on the lower lids
    drv = np.stack([blink, base, base, base])
    assert neutral_frame(drv) != 0
    out, _ = transfer_relative(drv, _face(13, size=60), reference=neutral_frame(drv))
    assert np.linalg.norm(out[0][37] - out[0][41]) < 1.0  # the blink closes the source's eyes
