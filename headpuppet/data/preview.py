"""The preview of a preprocessed dataset: ``preview.png``, crops next to their landmark images and overlays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ..media.landmarks import rasterise
from .format import open_dataset

__all__ = ["write_preview"]


def write_preview(out: Path, prefer: list[str] | None = None, rows: int = 8, cell: int = 128) -> Path:
    """Write ``out/preview.png``: per sampled frame, the crop | its landmark image | the overlay.

    Samples up to ``rows`` videos spread evenly over those in ``prefer`` (the ones just processed;
    all videos when none), with frames spread over each video, so a person can check crops and
    landmarks.
    """
    ds = open_dataset(out)
    by_id = {v.id: v for v in ds.videos}
    order = sorted((by_id[i] for i in set(prefer or []) if i in by_id), key=lambda v: v.id) or ds.videos
    # spread the rows evenly over the videos, several frames per video when there are few videos
    picks: list[tuple[Any, int]] = []
    n_videos = min(len(order), rows)
    per_video = max(1, rows // max(1, n_videos))
    chosen = [order[int(round(k))] for k in np.linspace(0, len(order) - 1, n_videos)]
    for v in chosen:
        for k in range(per_video):
            picks.append((v, int(round((k + 0.5) / per_video * (v.num_frames - 1)))))
    picks = picks[:rows]
    label_h = 14
    canvas = Image.new("RGB", (3 * cell, len(picks) * (cell + label_h) + label_h), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(("crop", "landmark image", "overlay")):
        draw.text((c * cell + 4, 1), title, fill=(230, 230, 230))
    for r, (v, i) in enumerate(picks):
        crop = v.frame(i)
        iris = v.iris[i] if v.iris is not None else None
        y = rasterise(v.landmarks[i], ds.size, iris=iris)
        mask = y.max(axis=2, keepdims=True) > 0
        overlay = np.where(mask, y, (crop * 0.6).astype(np.uint8))
        top = label_h + r * (cell + label_h)
        for c, img in enumerate((crop, y, overlay)):
            tile = Image.fromarray(img).resize((cell, cell), Image.BILINEAR)
            canvas.paste(tile, (c * cell, top))
        draw.text((4, top + cell), f"{v.id}  frame {i}/{v.num_frames}"[:60], fill=(200, 200, 200))
    path = Path(out) / "preview.png"
    tmp = path.with_name(f".preview.{os.getpid()}.png")
    canvas.save(tmp)
    os.replace(tmp, path)
    return path
