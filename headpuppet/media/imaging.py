"""Image I/O and conversions shared by every stage.

Frames at the edges are ``(H, W, 3) uint8 RGB``; inside networks ``(3, H, W)`` / ``(B, 3, H, W)``
float32 in ``[-1, 1]``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MediaError

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv"}


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTS


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTS


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as ``(H, W, 3) uint8 RGB``, whatever it holds.

    EXIF orientation is applied; grayscale is repeated over the channels; 16-bit and 32-bit
    samples are scaled to 8 bits (not clipped, which made a 16-bit PNG all white); transparency
    is composited over white; CMYK (and palette, YCbCr, LAB) images are converted to RGB, through
    their embedded ICC profile where they carry one.
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not an image file")
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb8(ImageOps.exif_transpose(im) or im)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise MediaError(f"{path}: not a readable image ({exc.__class__.__name__})") from None


def _to_rgb8(im) -> np.ndarray:
    """A PIL image in any mode -> ``(H, W, 3) uint8 RGB``."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16") or (mode == "I" and a.size and a.min() >= 0 and a.max() <= 65535
                                        and im.format in ("PNG", "TIFF") and a.max() > 255):
            a = a / 257.0                                     # 16-bit samples
        elif mode == "F" and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0                                     # float in [0, 1]
        elif a.size and np.nanmax(a) > 255:
            a = a * (255.0 / np.nanmax(a))                    # anything wider: its own range
        g = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "CMYK" and im.info.get("icc_profile"):
        try:
            from PIL import ImageCms  # local: PIL may be built without littleCMS (-> plain conversion below)

            src = ImageCms.ImageCmsProfile(io.BytesIO(im.info["icc_profile"]))
            return np.asarray(ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"),
                                                        outputMode="RGB")).copy()
        except Exception:  # a broken profile: PIL's plain conversion below
            pass
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa") or (mode in ("L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    return np.asarray(im.convert("RGB")).copy()


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> None:
    """Write ``(H, W, 3) uint8 RGB`` to ``path`` (format from the extension)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kw = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(np.ascontiguousarray(image)).save(path, **kw)


def to_tensor(image: np.ndarray):
    """``(H, W, 3)`` or ``(N, H, W, 3)`` uint8 -> float32 tensor ``(3, H, W)`` / ``(N, 3, H, W)`` in [-1, 1]."""
    # local: preprocess workers import this module and never load torch (+1.4 s each, measured)
    import torch

    t = torch.from_numpy(np.ascontiguousarray(image)).float().div_(127.5).sub_(1.0)
    return t.permute(2, 0, 1) if t.ndim == 3 else t.permute(0, 3, 1, 2)


def to_uint8(tensor) -> np.ndarray:
    """Float tensor in [-1, 1], ``(3, H, W)`` or ``(B, 3, H, W)`` -> uint8 ``(H, W, 3)`` / ``(B, H, W, 3)``."""
    t = tensor.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to("cpu")
    t = t.permute(1, 2, 0) if t.ndim == 3 else t.permute(0, 2, 3, 1)
    return t.numpy().astype(np.uint8)
