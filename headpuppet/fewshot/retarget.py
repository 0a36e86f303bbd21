"""Driver landmark clean-up and motion transfer for ``animate``.

Zakharov et al. 2019 drive the generator with the landmarks of the driver frame as they are
(section 4, "puppeteering"), and note that with another person's landmarks the result takes on the
*driver's* face shape (section 5, limitations: "landmark adaptation"). This module does three
things to the driver's landmark track before it reaches G:

1. :func:`bridge_missing` fills frames where no face was found by linear interpolation between the
   nearest frames with a face (held constant before the first / after the last one).
2. :func:`smooth_track` removes detector jitter. The whole driver is known before rendering, so we
   use an offline, zero-phase Gaussian filter over time (``scipy.ndimage.gaussian_filter1d``,
   ``mode="nearest"``): no lag, unlike a causal EMA / One-Euro filter. ``sigma`` is in frames;
   1.0 removes frame-to-frame jitter while keeping syllable-rate mouth motion (a 1-frame sigma has
   its -3 dB point near fps/7.5, i.e. ~3.3 Hz at 25 fps).
3. :func:`transfer_relative` ("relative mode") moves the SOURCE's own landmarks by the driver's
   motion relative to a reference frame of the driver, so the source keeps its face shape:

   * pose: a similarity ``T_t = (s, R, t)`` (Umeyama 1991) maps the stable points (nose, eye
     corners, upper jaw ends; :data:`STABLE`) of driver frame ``t`` onto the reference frame;
   * expression: ``d_t = T_t(driver_t) - driver_ref`` is the per-point displacement left after
     removing the pose, in the reference frame's pixels;
   * ``A`` = similarity from driver reference to the source (stable points) carries those
     displacements over, scaled to the source's face size and rotated to its head roll;
   * the driver's relative pose ``P_t = T_t^-1`` is applied around the source face as
     ``A P_t A^-1``. In all: ``out_t = A P_t A^-1 (source + sA RA d_t) = A P_t (A^-1 source + d_t)``.

   A driver that only moves rigidly therefore moves the source rigidly (its shape is kept); a
   driver whose mouth opens by ``d`` px opens the source's mouth by ``d * size_src / size_drv``;
   a constant driver leaves the source landmarks unchanged.

   The reference frame is the first frame or, by default, the most *neutral* frame
   (:func:`neutral_frame`): smallest mouth opening + smallest yaw asymmetry + smallest roll, eyes
   as open as the driver's median (no blink), so
   that "mouth closed, facing the camera" in the driver maps to the source photo's own expression.

All landmarks are ``(68, 2)`` float pixels ``(x, y)`` in iBUG-68 order; irises ``(2, 3)`` rows
``(cx, cy, r)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..errors import NoFaceError

#: Points that move with the skull but hardly with expression: nose bridge and base (27-35),
#: outer and inner eye corners (36, 39, 42, 45), upper ends of the jaw line (0, 1, 15, 16).
STABLE = np.array([27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45, 0, 1, 15, 16])


@dataclass
class Similarity:
    """``x -> s * R @ x + t`` on row vectors: ``apply(p) = s * p @ R.T + t``."""

    s: float
    R: np.ndarray  # (2, 2)
    t: np.ndarray  # (2,)

    def apply(self, p: np.ndarray) -> np.ndarray:
        return self.s * p @ self.R.T + self.t

    def inverse(self) -> "Similarity":
        Ri = self.R.T
        return Similarity(1.0 / self.s, Ri, -(Ri @ self.t) / self.s)

    def then(self, other: "Similarity") -> "Similarity":
        """``other ∘ self`` (apply self first)."""
        return Similarity(self.s * other.s, other.R @ self.R, other.s * (other.R @ self.t) + other.t)

    @property
    def angle(self) -> float:
        return float(np.arctan2(self.R[1, 0], self.R[0, 0]))


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = True) -> Similarity:
    """Least-squares similarity mapping ``src`` (N, 2) onto ``dst`` (N, 2) (Umeyama 1991), no reflection."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    cov = xd.T @ xs / len(src)  # (2, 2)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1.0  # forbid reflections
    R = U @ D @ Vt
    var_s = (xs ** 2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * R @ mu_s
    return Similarity(s, R, t)


def bridge_missing(points: np.ndarray, found: np.ndarray,
                   iris: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Fill frames without a face by interpolating their neighbours.

    Args:
        points: ``(T, 68, 2)``; rows where ``found`` is False are ignored (may be NaN).
        found: ``(T,)`` bool, a face was detected in that frame.
        iris: ``(T, 2, 3)`` or None, bridged the same way.

    Returns:
        ``(points, iris, bridged)``: filled copies and the number of frames that were filled.

    Raises:
        NoFaceError: when no frame has a face.
    """
    points = np.asarray(points, np.float32).copy()
    found = np.asarray(found, bool)
    if not found.any():
        raise NoFaceError("no face found in any frame of the driver; use a video that shows a face")
    bridged = int((~found).sum())
    if bridged:
        t = np.arange(len(points))
        known = t[found]

        def fill(arr: np.ndarray) -> np.ndarray:
            flat = arr.reshape(len(arr), -1)
            for j in range(flat.shape[1]):
                flat[~found, j] = np.interp(t[~found], known, flat[found, j])  # holds ends constant
            return flat.reshape(arr.shape)

        points = fill(points)
        if iris is not None:
            iris = fill(np.asarray(iris, np.float32).copy())
    return points, iris, bridged


def smooth_track(points: np.ndarray, sigma: float) -> np.ndarray:
    """Zero-phase Gaussian smoothing over time of ``(T, ...)`` tracks; ``sigma`` in frames (0: off)."""
    if sigma <= 0 or len(points) < 2:
        return np.asarray(points, np.float32).copy()
    return gaussian_filter1d(np.asarray(points, np.float64), sigma, axis=0, mode="nearest").astype(np.float32)


def _iod(p: np.ndarray) -> float:
    """Outer-eye-corner distance, the face's size unit."""
    return float(np.linalg.norm(p[45] - p[36])) + 1e-6


def neutrality(points: np.ndarray) -> np.ndarray:
    """Per-frame cost of ``(T, 68, 2)``: mouth opening + yaw asymmetry + roll + eye opening away from
    the driver's median (lower = more neutral). Distances are in units of the outer-eye-corner
    distance, angles in radians."""
    p = np.asarray(points, np.float64)
    iod = np.linalg.norm(p[:, 45] - p[:, 36], axis=1) + 1e-6
    mouth = np.linalg.norm(p[:, 66] - p[:, 62], axis=1) / iod          # inner lips apart
    yaw = np.abs(np.linalg.norm(p[:, 30] - p[:, 36], axis=1)
                 - np.linalg.norm(p[:, 30] - p[:, 45], axis=1)) / iod  # nose tip off the eyes' middle
    d = p[:, 45] - p[:, 36]
    roll = np.abs(np.arctan2(d[:, 1], d[:, 0]))                         # radians
    # eyes as open as usual for this driver (a blink or a squint is not neutral)
    eyes = (np.linalg.norm(p[:, [37, 38, 43, 44]] - p[:, [41, 40, 47, 46]], axis=2).mean(1)) / iod
    blink = np.abs(eyes - np.median(eyes))
    return mouth + yaw + roll + blink


def neutral_frame(points: np.ndarray) -> int:
    """Index of the most neutral frame of ``(T, 68, 2)`` (see :func:`neutrality`)."""
    return int(np.argmin(neutrality(points)))


def transfer_relative(driver: np.ndarray, source: np.ndarray, reference: int = 0,
                      driver_iris: np.ndarray | None = None, source_iris: np.ndarray | None = None,
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """The driver's motion relative to frame ``reference``, applied to the source's landmarks.

    Args:
        driver: ``(T, 68, 2)`` driver landmarks (no gaps; see :func:`bridge_missing`).
        source: ``(68, 2)`` the source face's own landmarks (same pixel frame as the output).
        reference: index of the driver frame that corresponds to the source's expression and pose.
        driver_iris / source_iris: ``(T, 2, 3)`` / ``(2, 3)`` irises; moved as two extra points
            (their centres), the radius scaled by the overall scale. Both are needed to transfer
            irises; otherwise the returned iris is None.

    Returns:
        ``(points (T, 68, 2) float32, iris (T, 2, 3) float32 | None)``.
    """
    driver = np.asarray(driver, np.float64)
    source = np.asarray(source, np.float64)
    T = len(driver)
    use_iris = driver_iris is not None and source_iris is not None
    if use_iris:
        driver_iris = np.asarray(driver_iris, np.float64)
        source_iris = np.asarray(source_iris, np.float64)
        drv = np.concatenate([driver, driver_iris[:, :, :2]], axis=1)     # (T, 70, 2)
        src = np.concatenate([source, source_iris[:, :2]], axis=0)        # (70, 2)
    else:
        drv, src = driver, source
    ref = drv[reference]
    A = umeyama(ref[STABLE], src[STABLE])        # driver reference -> source
    A_inv = A.inverse()
    base = A_inv.apply(src)                      # the source, seen in the driver reference's frame
    out = np.empty_like(drv)
    radius = np.empty((T, 2)) if use_iris else None
    for t in range(T):
        Tt = umeyama(drv[t][STABLE], ref[STABLE])  # frame t -> reference (removes pose)
        disp = Tt.apply(drv[t]) - ref              # expression in reference pixels
        Pt = Tt.inverse()                          # reference -> frame t (the driver's relative pose)
        M = A_inv.then(Pt).then(A)                 # A P_t A^-1, the pose around the source
        out[t] = M.apply(A.apply(base + disp))     # = A P_t (A^-1 src + d_t)
        if use_iris:
            # radius: the source's own, times the driver's relative size change of its iris and head
            rel = driver_iris[t, :, 2] / np.maximum(driver_iris[reference, :, 2], 1e-6)
            radius[t] = source_iris[:, 2] * rel
    points = out[:, :68].astype(np.float32)
    iris = None
    if use_iris:
        iris = np.concatenate([out[:, 68:], radius[:, :, None]], axis=2).astype(np.float32)
    return points, iris


@dataclass
class DriverTrack:
    """The driver's landmarks after :func:`prepare_track`, with what was done to them."""

    points: np.ndarray            # (T, 68, 2) float32, the landmarks G is driven with
    iris: np.ndarray | None       # (T, 2, 3) or None
    bridged: int                  # frames without a face, filled from neighbours
    reference: int | None         # the driver frame mapped onto the source (relative mode)


def prepare_track(points: np.ndarray, found: np.ndarray, iris: np.ndarray | None = None, *,
                  smooth: float = 1.0, relative: bool = True, source: np.ndarray | None = None,
                  source_iris: np.ndarray | None = None, reference: str | int = "neutral") -> DriverTrack:
    """Bridge, smooth and (in relative mode) retarget a driver landmark track.

    Args:
        points: ``(T, 68, 2)`` driver landmarks in crop pixels (rows without a face ignored).
        found: ``(T,)`` bool.
        iris: ``(T, 2, 3)`` or None.
        smooth: Gaussian sigma in frames; 0 disables.
        relative: transfer motion onto ``source`` (``(68, 2)``, required) instead of passing the
            driver's landmarks through (absolute mode, the paper's puppeteering).
        reference: ``"neutral"``, ``"first"`` or a frame index.
    """
    pts, iris, bridged = bridge_missing(points, found, iris)
    pts = smooth_track(pts, smooth)
    if iris is not None:
        iris = smooth_track(iris, smooth)
    if not relative:
        return DriverTrack(pts, iris, bridged, None)
    if source is None:
        raise ValueError("relative mode needs the source landmarks")
    if reference == "neutral":
        ref = neutral_frame(pts)
    elif reference == "first":
        ref = 0
    else:
        ref = int(reference)
    out, out_iris = transfer_relative(pts, source, ref, iris, source_iris)
    # without the source's own irises there is nothing to move the driver's gaze onto
    return DriverTrack(out, out_iris, bridged, ref)
