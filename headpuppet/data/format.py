"""The preprocessed dataset on disk: reader (:func:`open_dataset`) and writer (used by preprocess).

Zakharov et al. 2019, Sec. 3.2 and 4: meta-learning samples K+1 frames of one video with their
68 landmarks; the frames are face crops at a fixed resolution (256 in the paper). This module
fixes how those crops and landmarks are stored; ``docs/dataset-format.md`` is the full spec::

    ROOT/dataset.json                 {"format": "headpuppet-dataset", "version": 1, "size": S,
                                       "detector": "mediapipe", "has_iris": true}
    ROOT/videos/<id>/frames/000000.jpg ...   S x S RGB JPEG, numbered 0..T-1 (kept frames only)
    ROOT/videos/<id>/landmarks.npy    (T, 68, 2) float32, crop pixels (x, y)
    ROOT/videos/<id>/iris.npy         (T, 2, 3) float32 (cx, cy, r) crop pixels; only when has_iris
    ROOT/videos/<id>/meta.json        written LAST: its presence marks the video complete

A video is written into ``ROOT/videos/.tmp-<id>-<pid>/`` and renamed to ``ROOT/videos/<id>/``
after its meta.json is written, so a half-written video is never listed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import HeadpuppetError

__all__ = ["FORMAT", "VERSION", "DatasetError", "DatasetIndex", "VideoRecord", "open_dataset",
           "write_dataset_json", "PendingVideo", "is_done", "clean_partial", "sanitize_id"]

FORMAT = "headpuppet-dataset"
VERSION = 1
DATASET_JSON = "dataset.json"
META_JSON = "meta.json"
TMP_PREFIX = ".tmp-"


class DatasetError(HeadpuppetError):
    """A dataset folder is missing, is not a headpuppet dataset, is empty, or does not match."""


def _how_to_make(root: Path) -> str:
    return f"make one with `headpuppet preprocess VIDEOS... --out {root}`"


# ----------------------------------------------------------------------------------------- reader


def _load_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 ``.npy`` array of ``shape``; pickled objects are refused (loading them can run code)."""
    redo = f"delete {path.parent} and re-run preprocess to redo that video"
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DatasetError(f"{path} holds pickled Python objects, which are refused as unsafe; {redo}") from None
        raise DatasetError(f"{path}: not a readable .npy array ({str(exc).splitlines()[0][:120]}); {redo}") from None
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: unreadable ({type(exc).__name__}); {redo}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu" or tuple(arr.shape) != tuple(shape):
        raise DatasetError(f"{path} holds {getattr(arr, 'dtype', '?')} {tuple(getattr(arr, 'shape', ()))}, "
                           f"expected numbers of shape {tuple(shape)}; {redo}")
    return arr.astype(np.float32, copy=False)


@dataclass
class VideoRecord:
    """One complete video of the dataset. Arrays are loaded lazily and cached.

    Attributes:
        id: folder name under ``videos/``.
        person: identity label (videos of one person share it; VoxCeleb2: the ``idXXXXX`` folder).
        num_frames: T, the number of stored frames.
        path: the video's folder.
        size: S, crop side in pixels.
        has_iris: whether ``iris.npy`` exists.
        fps: frame rate of the source video (``None`` for a folder of frames).
        source: the input path the video came from.
        frame_indices: for each stored frame, its index in the source (after ``--every`` sampling
            and dropping frames without a face).
        crop: the crop box ``[x0, y0, side]`` in source-frame pixels.
        meta: the whole meta.json.
    """

    id: str
    person: str
    num_frames: int
    path: Path
    size: int
    has_iris: bool = False
    fps: float | None = None
    source: str = ""
    frame_indices: list[int] = field(default_factory=list)
    crop: list[int] = field(default_factory=list)
    meta: dict = field(default_factory=dict, repr=False)
    _landmarks: np.ndarray | None = field(default=None, repr=False)
    _iris: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def load(cls, folder: Path) -> "VideoRecord":
        meta = json.loads((folder / META_JSON).read_text())
        return cls(
            id=str(meta.get("id", folder.name)), person=str(meta.get("person", folder.name)),
            num_frames=int(meta["num_frames"]), path=folder, size=int(meta["size"]),
            has_iris=bool(meta.get("has_iris", False)), fps=meta.get("fps"), source=str(meta.get("source", "")),
            frame_indices=list(meta.get("frame_indices", [])), crop=list(meta.get("crop", [])), meta=meta,
        )

    @property
    def landmarks(self) -> np.ndarray:
        """``(T, 68, 2) float32`` landmark pixels in the crop."""
        if self._landmarks is None:
            self._landmarks = _load_array(self.path / "landmarks.npy", (self.num_frames, 68, 2))
        return self._landmarks

    @property
    def iris(self) -> np.ndarray | None:
        """``(T, 2, 3) float32`` ``(cx, cy, r)`` in the crop (NaN rows where a frame had none), or ``None``."""
        if not self.has_iris:
            return None
        if self._iris is None:
            self._iris = _load_array(self.path / "iris.npy", (self.num_frames, 2, 3))
        return self._iris

    def frame_path(self, i: int) -> Path:
        if not 0 <= i < self.num_frames:
            raise IndexError(f"frame {i} out of range for video {self.id} with {self.num_frames} frames")
        return self.path / "frames" / f"{i:06d}.jpg"

    def frame(self, i: int) -> np.ndarray:
        """Stored frame ``i`` as ``(S, S, 3) uint8 RGB``."""
        p = self.frame_path(i)
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"{p}: cannot read this frame; the dataset is damaged, re-run preprocess on it")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def frames(self, indices) -> np.ndarray:
        """Several stored frames: ``(k, S, S, 3) uint8``."""
        return np.stack([self.frame(int(i)) for i in indices])


def resize_frame(frame: np.ndarray, size: int) -> np.ndarray:
    """A stored ``(S, S, 3)`` frame at ``size x size`` (INTER_AREA down, cubic up; itself at its size)."""
    if frame.shape[0] == size and frame.shape[1] == size:
        return frame
    interp = cv2.INTER_AREA if frame.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(frame, (size, size), interpolation=interp)


class ResizedRecord:
    """A :class:`VideoRecord` seen at another crop size: frames resized (INTER_AREA down, cubic up),
    landmarks and irises scaled with them. Everything else is the record's own."""

    def __init__(self, record: VideoRecord, size: int):
        self.record, self.size = record, int(size)
        self.scale = self.size / float(record.size)

    def __getattr__(self, name):  # id, person, num_frames, fps, ...: the record's
        return getattr(self.record, name)

    @property
    def landmarks(self) -> np.ndarray:
        return self.record.landmarks * np.float32(self.scale)

    @property
    def iris(self) -> np.ndarray | None:
        iris = self.record.iris
        return None if iris is None else iris * np.float32(self.scale)  # (cx, cy, r) all scale

    def frame(self, i: int) -> np.ndarray:
        return resize_frame(self.record.frame(i), self.size)

    def frames(self, indices) -> np.ndarray:
        return np.stack([self.frame(int(i)) for i in indices])


@dataclass
class DatasetIndex:
    """An opened dataset: its settings and its complete videos (sorted by id)."""

    root: Path
    size: int
    has_iris: bool
    detector: str
    videos: list[VideoRecord]
    info: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.videos)

    def resized(self, size: int) -> "DatasetIndex":
        """The same dataset seen at crop size ``size`` (itself when it already is)."""
        if int(size) == self.size:
            return self
        return DatasetIndex(self.root, int(size), self.has_iris, self.detector,
                            [ResizedRecord(v, size) for v in self.videos], self.info)

    @property
    def persons(self) -> list[str]:
        return sorted({v.person for v in self.videos})

    @property
    def num_frames(self) -> int:
        return sum(v.num_frames for v in self.videos)


def read_dataset_json(root: Path) -> dict:
    """``ROOT/dataset.json``, checked; :class:`DatasetError` with a one-line reason otherwise."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset folder; {_how_to_make(root)}")
    if not root.is_dir():
        raise DatasetError(f"{root}: is a file, not a dataset folder; {_how_to_make(root)}")
    path = root / DATASET_JSON
    if not path.exists():
        raise DatasetError(f"{root}: not a headpuppet dataset (no {DATASET_JSON}); {_how_to_make(root)}")
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable ({type(exc).__name__}); re-run preprocess into a new folder") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a headpuppet dataset (format is not '{FORMAT}')")
    version = info.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise DatasetError(f"{path}: dataset format version {version!r} is newer than this headpuppet "
                           f"reads ({VERSION}); upgrade headpuppet")
    size = info.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 8:
        raise DatasetError(f"{path}: 'size' must be the crop side in pixels, got {size!r}; the dataset is "
                           f"damaged, re-run preprocess into a new folder")
    return info


def open_dataset(root: str | Path, require_videos: bool = True) -> DatasetIndex:
    """Open a dataset folder, listing only complete videos (those with ``meta.json``).

    Raises:
        DatasetError: missing folder, not a dataset, or (with ``require_videos``) no complete video.
    """
    root = Path(root)
    info = read_dataset_json(root)
    videos: list[VideoRecord] = []
    vdir = root / "videos"
    if vdir.is_dir():
        for folder in sorted(vdir.iterdir()):
            if folder.name.startswith(".") or not (folder / META_JSON).is_file():
                continue
            try:
                videos.append(VideoRecord.load(folder))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                raise DatasetError(f"{folder / META_JSON}: unreadable ({type(exc).__name__}); delete that "
                                   f"video folder and re-run preprocess to redo it") from None
    if require_videos and not videos:
        raise DatasetError(f"{root}: the dataset has no complete videos yet; run `headpuppet preprocess "
                           f"VIDEOS... --out {root}`")
    return DatasetIndex(root=root, size=int(info["size"]), has_iris=bool(info.get("has_iris", False)),
                        detector=str(info.get("detector", "")), videos=videos, info=info)


# ----------------------------------------------------------------------------------------- writer


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_dataset_json(root: str | Path, size: int, detector: str, has_iris: bool) -> dict:
    """Create ``ROOT/dataset.json``, or check that an existing one has the same settings.

    Raises:
        DatasetError: ROOT is a file, or is a dataset made with another size or detector, or is a
            non-empty folder that is not a dataset.
    """
    root = Path(root)
    info = {"format": FORMAT, "version": VERSION, "size": int(size), "detector": str(detector),
            "has_iris": bool(has_iris)}
    if root.exists() and not root.is_dir():
        raise DatasetError(f"{root}: is a file; give --out a folder")
    if (root / DATASET_JSON).exists():
        old = read_dataset_json(root)
        if int(old.get("size", -1)) != int(size):
            raise DatasetError(f"{root}: this dataset was made with --size {old.get('size')}, not {size}; "
                               f"use the same size or another --out folder")
        if str(old.get("detector")) != str(detector):
            raise DatasetError(f"{root}: this dataset was made with --detector {old.get('detector')}, not "
                               f"{detector}; use the same detector or another --out folder")
        return old
    if root.is_dir() and any(p for p in root.iterdir() if not p.name.startswith(".")):
        raise DatasetError(f"{root}: folder is not empty and is not a headpuppet dataset; give --out an "
                           f"empty or new folder")
    try:
        (root / "videos").mkdir(parents=True, exist_ok=True)
        _atomic_write_text(root / DATASET_JSON, json.dumps(info, indent=2) + "\n")
    except OSError as exc:
        raise DatasetError(f"{root}: cannot write the dataset here ({exc.strerror}); choose another --out") from None
    return info


_ID_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize_id(text: str) -> str:
    """A safe folder name: runs of other characters become ``_``; never empty, never hidden."""
    s = _ID_BAD.sub("_", text).strip("_")
    s = s.lstrip(".")
    return s or "video"


def is_done(root: str | Path, video_id: str) -> bool:
    """Whether ``video_id`` is complete in the dataset at ``root``."""
    return (Path(root) / "videos" / video_id / META_JSON).is_file()


def clean_partial(root: str | Path, video_id: str) -> int:
    """Remove leftovers of interrupted runs for ``video_id`` (``videos/.tmp-<id>-*``).

    Only this video's leftovers are touched, so shards of one array job writing into the same
    folder never remove each other's work in progress. Returns how many were removed.
    """
    vdir = Path(root) / "videos"
    n = 0
    if not vdir.is_dir():
        return 0
    prefix = f"{TMP_PREFIX}{video_id}-"
    for p in vdir.iterdir():
        if p.name.startswith(prefix) and p.name[len(prefix):].isdigit():
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    # an id folder without meta.json is an older layout's half-written video; redo it too
    final = vdir / video_id
    if final.is_dir() and not (final / META_JSON).exists():
        shutil.rmtree(final, ignore_errors=True)
        n += 1
    return n


def _meta_json(meta: dict) -> str:
    """Indented JSON, but each list of numbers on one line (frame_indices can be thousands long)."""
    text = json.dumps(meta, indent=1)
    return re.sub(r"\[\s+([-0-9.eE,\s]+?)\s+\]", lambda m: "[" + re.sub(r"\s+", " ", m.group(1)) + "]", text) + "\n"


class PendingVideo:
    """A video being written: frames go to ``videos/.tmp-<id>-<pid>/``; :meth:`finish` publishes it.

    Usage::

        pv = PendingVideo(root, video_id, size)
        try:
            for crop in crops: pv.add_frame(crop)
            pv.finish(landmarks, iris, meta)
        except BaseException:
            pv.abort(); raise
    """

    def __init__(self, root: str | Path, video_id: str, size: int, jpeg_quality: int = 95):
        self.root = Path(root)
        self.id = video_id
        self.size = int(size)
        self.quality = int(jpeg_quality)
        self.tmp = self.root / "videos" / f"{TMP_PREFIX}{video_id}-{os.getpid()}"
        self.final = self.root / "videos" / video_id
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        (self.tmp / "frames").mkdir(parents=True)
        self.num_frames = 0

    def add_frame(self, image: np.ndarray) -> None:
        """Append the next ``(S, S, 3) uint8 RGB`` crop as ``frames/<n>.jpg``."""
        self.add_encoded(self.encode(image))

    def encode(self, image: np.ndarray) -> bytes:
        """The JPEG bytes :meth:`add_frame` would write for ``image`` (safe to call from several threads)."""
        if image.shape != (self.size, self.size, 3) or image.dtype != np.uint8:
            raise ValueError(f"frame must be ({self.size}, {self.size}, 3) uint8, got {image.shape} {image.dtype}")
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise DatasetError(f"cannot encode frame {self.num_frames} of {self.id} as JPEG")
        return buf.tobytes()

    def add_encoded(self, data: bytes) -> None:
        """Append the next frame as ``frames/<n>.jpg`` from :meth:`encode`'s bytes."""
        path = self.tmp / "frames" / f"{self.num_frames:06d}.jpg"
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise DatasetError(f"{path}: cannot write the frame ({exc.strerror or exc})") from exc
        self.num_frames += 1

    def finish(self, landmarks: np.ndarray, iris: np.ndarray | None, meta: dict[str, Any]) -> Path:
        """Write landmarks (+ iris), then meta.json, then rename into place. Returns the video folder."""
        lm = np.asarray(landmarks, dtype=np.float32)
        if lm.shape != (self.num_frames, 68, 2):
            raise ValueError(f"landmarks must be ({self.num_frames}, 68, 2), got {lm.shape}")
        np.save(self.tmp / "landmarks.npy", lm)
        if iris is not None:
            ir = np.asarray(iris, dtype=np.float32)
            if ir.shape != (self.num_frames, 2, 3):
                raise ValueError(f"iris must be ({self.num_frames}, 2, 3), got {ir.shape}")
            np.save(self.tmp / "iris.npy", ir)
        meta = dict(meta)
        meta.update(id=self.id, num_frames=self.num_frames, size=self.size, has_iris=iris is not None)
        (self.tmp / META_JSON).write_text(_meta_json(meta))
        if self.final.exists():
            if (self.final / META_JSON).exists():
                raise DatasetError(f"{self.final}: already complete (another run wrote it meanwhile)")
            shutil.rmtree(self.final)
        os.rename(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
