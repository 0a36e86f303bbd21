"""Pictures of a run a person can look at: sample grids and loss curves (matplotlib, Agg backend).

A sample grid has one row per preview episode: the K shots the embedder saw, the target's landmark
image ``y_i(t)``, the generated frame ``G(y_i(t), e_i)`` and the real frame ``x_i(t)``
(Zakharov et al. 2019, figure 3 shows the same layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..media.imaging import to_uint8, write_image

_GAP = 2  # pixels of white between tiles


def sample_grid(shots: torch.Tensor, target_landmarks: torch.Tensor, fake: torch.Tensor,
                real: torch.Tensor, extra: torch.Tensor | list[torch.Tensor] | None = None) -> np.ndarray:
    """``(H, W, 3) uint8`` grid: per row ``shots (K) | landmark image | generated | real [| extra...]``.

    Args:
        shots: ``(B, K, 3, S, S)``; target_landmarks, fake, real, extra (one or a list):
            ``(B, 3, S, S)``, in [-1, 1].
    """
    B, K, _, S, _ = shots.shape
    extras = [] if extra is None else list(extra) if isinstance(extra, (list, tuple)) else [extra]
    cols = [shots[:, k] for k in range(K)] + [target_landmarks, fake, real] + extras
    tiles = [to_uint8(c) for c in cols]  # each (B, S, S, 3)
    H = B * S + (B - 1) * _GAP
    W = len(cols) * S + (len(cols) - 1) * _GAP
    grid = np.full((H, W, 3), 255, dtype=np.uint8)
    for r in range(B):
        for c, t in enumerate(tiles):
            y, x = r * (S + _GAP), c * (S + _GAP)
            grid[y:y + S, x:x + S] = t[r]
    return grid


def save_grid(path: str | Path, grid: np.ndarray) -> None:
    write_image(path, grid)


def plot_losses(records: list[dict], path: str | Path) -> None:
    """Loss curves of ``stats.jsonl`` records: G terms (left) and D terms (right), against step."""
    # local: matplotlib (+0.35 s, measured) only when a plot is drawn: this module comes with the training
    # package, which every command that reads a checkpoint imports
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    steps = [r["step"] for r in records]
    fig = Figure(figsize=(11, 4), dpi=90)
    for i, prefix in enumerate(("Loss/G/", "Loss/D/")):
        ax = fig.add_subplot(1, 2, i + 1)
        keys = sorted({k for r in records for k in r if k.startswith(prefix)})
        for k in keys:
            xs = [s for s, r in zip(steps, records) if k in r]
            ys = [r[k] for r in records if k in r]
            ax.plot(xs, ys, label=k[len(prefix):], lw=1.2 if k.endswith("total") else 0.9)
        ax.set_title(prefix.rstrip("/").replace("Loss/", "") + " losses")
        ax.set_xlabel("step")
        ax.set_yscale("symlog", linthresh=0.1)  # L_MCH (x80) dwarfs the other terms early on
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(".tmp-" + path.name)
    fig.savefig(tmp, format="png")
    tmp.replace(path)
