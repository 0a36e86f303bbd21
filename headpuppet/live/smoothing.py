"""Causal landmark smoothing for live driving: the One-Euro filter, tuned to match ``animate``'s
zero-phase Gaussian of the same ``smooth`` sigma.
"""

from __future__ import annotations

import numpy as np


class OneEuroFilter:
    """The One-Euro filter (Casiez, Roussel & Vogel, CHI 2012) on arrays, per element.

    A first-order low-pass whose cut-off is ``min_cutoff + beta * |speed|`` (Hz; speed in units per
    second, itself low-passed at ``d_cutoff``): steady when still, little lag when moving fast.
    """

    def __init__(self, fps: float, min_cutoff: float, beta: float = 0.0, d_cutoff: float = 1.0):
        self.te = 1.0 / max(float(fps), 1e-3)
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.x: np.ndarray | None = None
        self.dx: np.ndarray | None = None

    def _alpha(self, cutoff):
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / self.te)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self.x is None:
            self.x, self.dx = x.copy(), np.zeros_like(x)
            return x.astype(np.float32)
        dx = (x - self.x) / self.te
        a_d = self._alpha(self.d_cutoff)
        self.dx = a_d * dx + (1 - a_d) * self.dx
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.dx))
        self.x = a * x + (1 - a) * self.x
        return self.x.astype(np.float32)

    def reset(self) -> None:
        self.x = self.dx = None


def smoothing_filter(smooth: float, fps: float, size: int) -> OneEuroFilter | None:
    """The causal counterpart of ``animate --smooth SIGMA`` (frames) for landmarks in ``size``-px crops,
    or None for ``smooth <= 0``. Minimum cut-off fps / (7.5 sigma) Hz (the Gaussian's -3 dB point);
    beta 0.05 per crop-px/s at 128 px, so a mouth opening at 100 px/s is followed at ~8 Hz."""
    if smooth <= 0:
        return None
    return OneEuroFilter(fps, min_cutoff=fps / (7.5 * smooth), beta=0.05 * 128.0 / size, d_cutoff=1.0)
