"""What ``animate`` and ``fine-tune`` take in: the SOURCE person and the DRIVER.

SOURCE (the K shots of the paper's few-shot setting, section 3.3) is one of

* a photo, several photos, or a folder of photos (each photo one shot);
* a video: K frames sampled evenly over its length;
* a fine-tuned person folder written by ``headpuppet fine-tune`` (section 3.4), recognised by
  :func:`~headpuppet.fewshot.person.is_person_dir`; it is read by :mod:`headpuppet.fewshot.person`.

DRIVER is a video, or a folder of frames (sorted by name, played at ``fps``).
Unreadable inputs raise :class:`~headpuppet.errors.MediaError` with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import MediaError
from ..media.imaging import is_image, is_video, read_image
from ..media.video import frame_folder, list_image_frames, probe, read_frames


@dataclass
class SourceImages:
    """Shots of the source person: full images (not yet cropped) and a label for each."""

    images: list[np.ndarray]          # each (H, W, 3) uint8 RGB
    labels: list[str]                 # file name, or "video.mp4#frame 12"
    stem: str                         # for default output names


def sample_video_frames(path: str | Path, k: int) -> tuple[list[np.ndarray], list[int]]:
    """``k`` frames spread evenly over a video (all of them if it is shorter)."""
    info = _probe(path)
    n = info.num_frames
    if n <= 0:
        raise MediaError(f"{path}: the video has no frames")
    wanted = sorted(set(np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()))
    frames, got = [], []
    try:
        for i, frame in enumerate(read_frames(path, max_frames=wanted[-1] + 1)):
            if i in wanted:
                frames.append(frame)
                got.append(i)
    except MediaError:
        raise
    except Exception as exc:  # a decoder failure is the file's fault, not a bug
        raise MediaError(f"{path}: cannot decode the video ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise MediaError(f"{path}: no frame could be decoded")
    return frames, got


def _probe(path: str | Path):
    try:
        return probe(path)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"{path}: not a readable video ({type(exc).__name__}: {exc})") from None


def load_source_images(paths: list[str | Path], k: int = 8) -> SourceImages:
    """Read the SOURCE shots (photos, a folder of photos, or ``k`` frames of a video).

    A folder with more than ``k`` images (a folder of frames) gives ``k`` of them spread evenly; a
    video folder of a preprocessed dataset (``meta.json`` + ``frames/``) gives its frames, whatever
    their crop size (faces are detected and cropped again at the model's size).

    A fine-tuned person folder is not handled here (check :func:`is_person_dir` first).
    """
    from .person import is_person_dir  # lazy: torch; opening a driver must not import it (drivertrack.py)

    if not paths:
        raise MediaError("no SOURCE given; pass a photo, several photos, a folder of photos or a video")
    images: list[np.ndarray] = []
    labels: list[str] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise MediaError(f"{path}: no such file or folder")
        if path.is_dir():
            if is_person_dir(path):
                raise MediaError(f"{path} is a fine-tuned person folder; give it as the only SOURCE")
            if (path / "meta.json").is_file() and (path / "frames").is_dir():
                path = path / "frames"  # a video of a preprocessed dataset (any crop size)
            files = list_image_frames(path)
            if not files:
                raise MediaError(f"{path}: the folder holds no photos ({', '.join(sorted({'.jpg', '.png'}))}, ...)")
            if len(files) > k:  # a folder of frames: k spread evenly, as for a video
                files = [files[i] for i in sorted(set(np.linspace(0, len(files) - 1, k).round().astype(int)))]
            for f in files:
                images.append(read_image(f))
                labels.append(f.name)
        elif is_video(path):
            frames, idx = sample_video_frames(path, k)
            images.extend(frames)
            labels.extend(f"{path.name}#frame {i}" for i in idx)
        elif is_image(path):
            images.append(read_image(path))
            labels.append(path.name)
        else:
            raise MediaError(f"{path}: not a photo or video this tool reads (use .jpg/.png or .mp4/.mov/...)")
    first = Path(paths[0])
    return SourceImages(images, labels, first.stem if first.suffix or not first.is_dir() else first.name)


@dataclass
class Driver:
    """The driver: a video or a folder of frames. ``frames()`` can be iterated more than once."""

    path: Path
    fps: float
    num_frames: int
    width: int
    height: int
    has_audio: bool = False
    files: list[Path] = field(default_factory=list)   # frame files when the driver is a folder

    @property
    def is_video(self) -> bool:
        return not self.files

    @property
    def stem(self) -> str:
        return self.path.stem if self.is_video else self.path.name

    def frames(self) -> Iterator[np.ndarray]:
        """Every frame, ``(H, W, 3) uint8 RGB``, in order."""
        if self.files:
            for f in self.files:
                yield read_image(f)
            return
        try:
            yield from read_frames(self.path)
        except MediaError:
            raise
        except Exception as exc:
            raise MediaError(f"{self.path}: cannot decode the video ({type(exc).__name__}: {exc})") from None


def open_driver(path: str | Path, fps: float = 25.0) -> Driver:
    """Open the DRIVER (video, or folder of frames played at ``fps``)."""
    path = Path(path)
    files = frame_folder(path)
    if files is not None:
        first = read_image(files[0])
        return Driver(path, float(fps), len(files), first.shape[1], first.shape[0], False, files)
    if not is_video(path):
        raise MediaError(f"{path}: the driver must be a video (.mp4, .mov, ...) or a folder of frames")
    info = _probe(path)
    if info.num_frames <= 0:
        raise MediaError(f"{path}: the video has no frames")
    return Driver(path, float(info.fps), int(info.num_frames), int(info.width), int(info.height),
                  bool(info.has_audio))
