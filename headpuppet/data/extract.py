"""One video -> face crops + 68 landmarks in the dataset (the per-video work of ``headpuppet preprocess``).

Decode (sampled by ``every`` / ``max_frames``), detect the largest face per frame, drop frames
without a face, choose ONE crop box for the whole video (:func:`headpuppet.media.crop.face_crop_box`),
crop and resize every kept frame, express the landmarks in crop pixels and write them
(:class:`headpuppet.data.format.PendingVideo`). A failure becomes a :class:`VideoResult` with a
one-line reason (:func:`run_one`), so one bad video never stops the batch.

Given several detectors (``headpuppet preprocess --workers N`` on fewer videos than N), threads
detect on blocks of the same video (:mod:`headpuppet.media.detection`: the landmarks are the same
as with one detector), then crop and JPEG-encode (OpenCV, which releases the GIL) the same way.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HeadpuppetError, MediaError
from ..media.crop import CropBox, crop_frame, face_crop_box, iris_to_crop, to_crop
from ..media.detection import BLOCK_FRAMES, blocks, detect_frames, ordered_map
from ..media.video import probe, read_frames, read_frames_any
from .discover import Item
from .format import PendingVideo, clean_partial

log = logging.getLogger(__name__)

__all__ = ["ExtractConfig", "VideoResult", "process_video", "run_one", "failure_result", "KEEP_FRAMES_BYTES"]

#: decoded frames are kept in memory up to this many bytes per video; beyond it the crop pass
#: decodes the video a second time instead of holding every frame.
KEEP_FRAMES_BYTES = 512 * 1024 * 1024


@dataclass
class VideoResult:
    """What happened to one item."""

    source: str
    id: str
    status: str  # "done" | "skipped" | "failed"
    reason: str = ""
    frames_kept: int = 0
    frames_no_face: int = 0
    seconds: float = 0.0



@dataclass
class ExtractConfig:
    out: Path
    size: int
    every: int
    max_frames: int | None
    detector: str


def _frames_of(item: Item, every: int, max_frames: int | None):
    """``(fps or None, frame iterator)`` for an item; MediaError when it cannot be read (for a folder
    without image files, from the iterator's first step)."""
    if item.kind == "video":
        info = probe(item.source)
        if info.num_frames == 0:
            raise MediaError(f"{item.source}: the video has no frames")
        return info.fps or None, read_frames(item.source, every=every, max_frames=max_frames)
    return None, read_frames_any(item.source, every=every, max_frames=max_frames)  # checks the folder itself


def process_video(item: Item, detector, cfg: ExtractConfig, task=None) -> VideoResult:
    """Preprocess one item into ``cfg.out/videos/<id>/``. Raises on failure (caller records it).

    ``detector``: one detector, or a list of them (one per thread, see the module docstring)."""
    t0 = time.perf_counter()
    detectors = list(detector) if isinstance(detector, (list, tuple)) else [detector]
    threads = len(detectors)
    clean_partial(cfg.out, item.id)
    fps, frames = _frames_of(item, cfg.every, cfg.max_frames)

    # pass 1: detect on every sampled frame; keep the frames themselves while they fit in memory
    kept_idx: list[int] = []
    points: list[np.ndarray] = []
    irises: list[np.ndarray | None] = []
    kept_frames: list[np.ndarray] | None = []
    held = 0
    n_seen = 0
    frame_hw = None
    for i, (frame, face) in enumerate(detect_frames(frames, detectors)):
        n_seen += 1
        frame_hw = frame.shape[:2]
        if face is None:
            continue
        kept_idx.append(i)
        points.append(face.points)
        irises.append(face.iris)
        if kept_frames is not None:
            held += frame.nbytes
            kept_frames.append(frame)
            if held > KEEP_FRAMES_BYTES:
                kept_frames = None  # too long to hold: decode again in pass 2
    if n_seen == 0:
        raise MediaError(f"{item.source}: no frames could be decoded")
    if not kept_idx:
        return VideoResult(str(item.source), item.id, "failed", reason=f"no face found in any of its {n_seen} frames",
                           frames_no_face=n_seen, seconds=time.perf_counter() - t0)

    pts = np.stack(points)  # (T, 68, 2) frame pixels
    box: CropBox = face_crop_box(pts, frame_hw)
    has_iris = bool(getattr(detectors[0], "has_iris", False))

    # pass 2: crop, resize and write (cropping and JPEG encoding on the threads, in order)
    pending = PendingVideo(cfg.out, item.id, cfg.size)
    try:
        if kept_frames is not None:
            source = iter(kept_frames)
        else:
            _, again = _frames_of(item, cfg.every, cfg.max_frames)
            wanted = set(kept_idx)
            source = (f for j, f in enumerate(again) if j in wanted)
        for block in ordered_map(lambda b: [pending.encode(crop_frame(f, box, cfg.size)) for f in b],
                                 blocks(source, BLOCK_FRAMES), threads):
            for data in block:
                pending.add_encoded(data)
        if pending.num_frames != len(kept_idx):
            raise MediaError(f"{item.source}: decoded {pending.num_frames} frames the second time, "
                             f"{len(kept_idx)} the first; the file may be damaged")
        lm = to_crop(pts, box, cfg.size)  # (T, 68, 2) crop pixels
        iris = None
        if has_iris:
            nan = np.full((2, 3), np.nan, dtype=np.float32)
            iris = np.stack([iris_to_crop(ir, box, cfg.size) if ir is not None else nan for ir in irises])
        meta = {
            "source": str(item.source),
            "person": item.person,
            "fps": fps,
            "every": cfg.every,
            "frame_indices": [int(i * cfg.every) for i in kept_idx],
            "frames_seen": n_seen,
            "crop": box.as_list(),
            "source_size": [int(frame_hw[1]), int(frame_hw[0])],
            "detector": cfg.detector,
        }
        pending.finish(lm, iris, meta)
    except BaseException:
        pending.abort()
        raise
    return VideoResult(str(item.source), item.id, "done", frames_kept=len(kept_idx),
                       frames_no_face=n_seen - len(kept_idx), seconds=time.perf_counter() - t0)


def failure_result(item: Item, exc: BaseException) -> VideoResult:
    if isinstance(exc, HeadpuppetError):
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        prefix = f"{item.source}: "
        if reason.startswith(prefix):
            reason = reason[len(prefix):]
    else:
        # an unexpected error in one video must not stop the batch; keep the traceback for -vv
        log.debug("preprocessing %s failed:\n%s", item.source, "".join(traceback.format_exception(exc)))
        text = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
    return VideoResult(str(item.source), item.id, "failed", reason=reason)


def run_one(item: Item, detector, cfg: ExtractConfig) -> VideoResult:
    try:
        return process_video(item, detector, cfg)
    except Exception as exc:  # noqa: BLE001 - recorded as a one-line reason
        return failure_result(item, exc)
