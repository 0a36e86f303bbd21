"""Image I/O and conversions shared by every stage.

Frames at the edges are ``(H, W, 3) uint8 RGB``; inside networks ``(3, H, W)`` / ``(B, 3, H, W)``
float32 in ``[-1, 1]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import MediaError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"}


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8 RGB`` (EXIF orientation applied, alpha dropped)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise MediaError(f"{path}: not a readable image ({exc.__class__.__name__})") from None


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    """Write ``(H, W, 3) uint8 RGB`` to ``path`` (format from the extension)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(np.ascontiguousarray(image)).save(path, **kw)


def to_tensor(image: np.ndarray):
    """``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 -> float32 tensor ``(3, H, W)`` / ``(N, 3, H, W)`` in [-1, 1]."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(image)).float().div_(127.5).sub_(1.0)
    return t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)


def to_uint8(tensor) -> np.ndarray:
    """Float tensor in [-1, 1], ``(3, H, W)`` or ``(B, 3, H, W)`` -> uint8 ``(H, W, 3)`` / ``(B, H, W, 3)``."""
    t = tensor.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to("cpu")
    t = t.permute(1, 2, 0) if t.ndim == 3 else t.permute(0, 2, 3, 1)
    return t.numpy().astype(np.uint8)
