"""``headpuppet preprocess``: videos -> face crops + 68 landmarks, in the dataset format.

Zakharov et al. 2019, Sec. 4 ("Datasets"): the meta-learning stage trains on VoxCeleb talking-head
videos whose frames are face crops with landmarks from an off-the-shelf detector (FAN in the paper;
here any ``landmarks`` plugin, MediaPipe by default). This module does that once, so training
reads JPEGs and ``.npy`` files instead of decoding video:

1. find the inputs (video files, folders of image frames, folders of those, recursively);
2. per video: decode (sampled by ``every`` / ``max_frames``), detect the largest face per frame,
   drop frames without a face, choose ONE crop box for the whole video
   (:func:`headpuppet.media.crop.face_crop_box`), crop and resize every kept frame to ``size``, express
   the landmarks in crop pixels and write them (:class:`headpuppet.data.format.PendingVideo`);
3. summarise: done, skipped (already complete), failed with a one-line reason, frames kept and
   frames dropped for want of a face.

Every per-video problem (missing path, not a video, unreadable, empty folder, no face at all)
becomes one line in the summary; the batch goes on. Completed videos are skipped on a re-run and
interrupted ones are redone, so a killed job is resumed by running the same command again.
``shard=(i, n)`` keeps every n-th input (from i, after sorting) so an array job splits the inputs
deterministically into disjoint parts that together cover everything.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .media.crop import CropBox, crop_frame, face_crop_box, iris_to_crop, to_crop
from .data.format import (DATASET_JSON, PendingVideo, clean_partial, is_done, open_dataset, sanitize_id,
                          write_dataset_json)
from .errors import HeadpuppetError, MediaError
from .media.imaging import is_image, is_video
from .progress import NULL, Reporter

log = logging.getLogger(__name__)

__all__ = ["Item", "VideoResult", "Summary", "discover", "assign_ids", "shard_items", "preprocess",
           "process_video", "write_preview"]

#: decoded frames are kept in memory up to this many bytes per video; beyond it the crop pass
#: decodes the video a second time instead of holding every frame.
KEEP_FRAMES_BYTES = 512 * 1024 * 1024


@dataclass
class Item:
    """One unit of work: a video file or a folder of frames, or an input that cannot be one.

    ``kind`` is ``"video"``, ``"frames"`` or ``"error"`` (then ``reason`` says why).
    """

    source: Path
    kind: str
    rel: str  # path relative to its input root, without a video extension, "/"-separated
    person: str
    id: str = ""
    reason: str = ""


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
class Summary:
    """The outcome of one preprocess run (this shard only)."""

    out: Path
    results: list[VideoResult] = field(default_factory=list)
    preview: Path | None = None
    seconds: float = 0.0

    def _of(self, status: str) -> list[VideoResult]:
        return [r for r in self.results if r.status == status]

    @property
    def done(self) -> list[VideoResult]:
        return self._of("done")

    @property
    def skipped(self) -> list[VideoResult]:
        return self._of("skipped")

    @property
    def failed(self) -> list[VideoResult]:
        return self._of("failed")

    @property
    def frames_kept(self) -> int:
        return sum(r.frames_kept for r in self.results)

    @property
    def frames_no_face(self) -> int:
        return sum(r.frames_no_face for r in self.results)

    @property
    def ok(self) -> bool:
        """Whether anything is usable: at least one video done or already complete."""
        return bool(self.done or self.skipped)


# ------------------------------------------------------------------------------------- discovery


def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _is_dataset_dir(p: Path) -> bool:
    return (p / DATASET_JSON).is_file()


def discover(inputs: list[Path], exclude: Path | None = None) -> list[Item]:
    """Expand the INPUT arguments into items (unsorted, ids not yet assigned).

    * a video file -> one item (id from its stem; person = the stem);
    * a folder whose files include images -> one "frames" item (its images in name order), and its
      video files and sub-folders are searched too;
    * any other folder -> searched recursively; ids are paths relative to the given folder, person
      is the first folder level below it (VoxCeleb2's ``idXXXXX/youtube_id/clip.mp4``) or the stem;
    * a missing path, a file that is neither video nor image, an empty folder -> an "error" item.

    Hidden files and folders, and folders that are headpuppet datasets (``exclude``, the output), are
    not searched.
    """
    items: list[Item] = []
    ex = exclude.resolve() if exclude is not None else None
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            items.append(Item(path, "error", path.name, path.stem, reason="no such file or folder"))
        elif path.is_file():
            if is_video(path):
                items.append(Item(path, "video", path.stem, path.stem))
            elif is_image(path):
                items.append(Item(path, "error", path.stem, path.stem,
                                  reason="a single image, not a video; put a video's frames in a folder"))
            else:
                items.append(Item(path, "error", path.stem, path.stem,
                                  reason=f"not a video (unsupported file type '{path.suffix or 'none'}')"))
        else:
            _walk(path, path, items, ex)
    return items


def _walk(folder: Path, root: Path, items: list[Item], exclude: Path | None) -> None:
    if exclude is not None and folder.resolve() == exclude or _is_dataset_dir(folder):
        return
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        items.append(Item(folder, "error", _rel(folder, root), folder.name, reason=f"cannot list ({exc.strerror})"))
        return
    entries = [e for e in entries if not _hidden(e)]
    images = [e for e in entries if e.is_file() and is_image(e)]
    if not entries:
        items.append(Item(folder, "error", _rel(folder, root), _person(folder, root),
                          reason="empty folder (no videos or image frames)"))
        return
    if images:
        items.append(Item(folder, "frames", _rel(folder, root), _person(folder, root)))
    for e in entries:
        if e.is_dir():
            _walk(e, root, items, exclude)
        elif is_video(e):
            items.append(Item(e, "video", _rel(e, root, strip_suffix=True), _person(e, root)))
        elif not is_image(e):
            items.append(Item(e, "error", _rel(e, root), _person(e, root),
                              reason=f"not a video (unsupported file type '{e.suffix or 'none'}')"))


def _rel(p: Path, root: Path, strip_suffix: bool = False) -> str:
    if p == root:
        return root.resolve().name or "input"
    rel = p.relative_to(root)
    if strip_suffix:
        rel = rel.with_suffix("")
    return rel.as_posix()


def _person(p: Path, root: Path) -> str:
    if p == root:
        return root.resolve().name or "input"
    parts = p.relative_to(root).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def assign_ids(items: list[Item]) -> list[Item]:
    """Sort items by source path and give each a unique, deterministic video id.

    The same source given twice is kept once. The id is the relative path with separators as ``_`` (``id00012/abc/00001.mp4`` ->
    ``id00012_abc_00001``); where two items would share an id, the first (by source path) keeps it
    and the others get ``_`` + 8 hex digits of a hash of their absolute path.
    """
    items = sorted(items, key=lambda it: str(it.source))
    unique: dict[Path, Item] = {}
    for it in items:  # the same file given twice (or found through two INPUTs) is one item
        unique.setdefault(it.source.resolve() if it.kind != "error" else it.source, it)
    items = list(unique.values())
    seen: set[str] = set()
    for it in items:
        base = sanitize_id(it.rel.replace("/", "_"))
        vid = base
        if vid in seen:
            digest = hashlib.sha1(str(it.source.resolve()).encode()).hexdigest()[:8]
            vid = f"{base}_{digest}"
        seen.add(vid)
        it.id = vid
    return items


def shard_items(items: list[Item], shard: tuple[int, int]) -> list[Item]:
    """Every ``n``-th item from ``i`` (items already sorted by :func:`assign_ids`)."""
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise HeadpuppetError(f"shard must be I/N with 0 <= I < N, got {i}/{n}")
    return items[i::n]


# ------------------------------------------------------------------------------------ per video


@dataclass
class _Config:
    out: Path
    size: int
    every: int
    max_frames: int | None
    detector: str


def _frames_of(item: Item, every: int, max_frames: int | None):
    """``(fps or None, frame iterator)`` for an item; MediaError when it cannot be read."""
    from .media.video import list_image_frames, probe, read_frames, read_frames_any

    if item.kind == "video":
        info = probe(item.source)
        if info.num_frames == 0:
            raise MediaError(f"{item.source}: the video has no frames")
        return info.fps or None, read_frames(item.source, every=every, max_frames=max_frames)
    if not list_image_frames(item.source):
        raise MediaError(f"{item.source}: folder has no image files")
    return None, read_frames_any(item.source, every=every, max_frames=max_frames)


def _largest(faces) -> Any:
    # detectors return the largest first by contract; choosing by area again costs nothing and
    # protects against a plugin that does not sort
    return max(faces, key=lambda f: f.area) if len(faces) > 1 else faces[0]


def process_video(item: Item, detector, cfg: _Config, task=None) -> VideoResult:
    """Preprocess one item into ``cfg.out/videos/<id>/``. Raises on failure (caller records it)."""
    t0 = time.perf_counter()
    clean_partial(cfg.out, item.id)
    if hasattr(detector, "reset"):
        detector.reset()
    fps, frames = _frames_of(item, cfg.every, cfg.max_frames)

    # pass 1: detect on every sampled frame; keep the frames themselves while they fit in memory
    kept_idx: list[int] = []
    points: list[np.ndarray] = []
    irises: list[np.ndarray | None] = []
    kept_frames: list[np.ndarray] | None = []
    held = 0
    n_seen = 0
    frame_hw = None
    for i, frame in enumerate(frames):
        n_seen += 1
        frame_hw = frame.shape[:2]
        faces = detector.detect(frame)
        if not faces:
            continue
        face = _largest(faces)
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
    has_iris = bool(getattr(detector, "has_iris", False))

    # pass 2: crop, resize and write
    pending = PendingVideo(cfg.out, item.id, cfg.size)
    try:
        if kept_frames is not None:
            source = iter(kept_frames)
        else:
            _, again = _frames_of(item, cfg.every, cfg.max_frames)
            wanted = set(kept_idx)
            source = (f for j, f in enumerate(again) if j in wanted)
        for frame in source:
            pending.add_frame(crop_frame(frame, box, cfg.size))
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


def _failure(item: Item, exc: BaseException) -> VideoResult:
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


def _run_one(item: Item, detector, cfg: _Config) -> VideoResult:
    try:
        return process_video(item, detector, cfg)
    except Exception as exc:  # noqa: BLE001 - recorded as a one-line reason
        return _failure(item, exc)


# -------------------------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _plugin_spec(pm) -> list[tuple[str, str | None, str | None, Any]]:
    """How a worker process can rebuild the plugins of ``pm``.

    One ``(name, module name, module file, object)`` per plugin: modules travel by name (re-imported,
    or loaded from their file, as ``--plugins-dir`` plugins are), other plugin objects by pickling.
    """
    import pickle

    spec = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        if isinstance(plugin, type(sys)):
            spec.append((name, plugin.__name__, getattr(plugin, "__file__", None), None))
        else:
            try:
                pickle.dumps(plugin)
            except Exception:  # noqa: BLE001 - such a plugin cannot reach the workers
                log.warning("plugin %s cannot be sent to worker processes; workers run without it", name)
                continue
            spec.append((name, None, None, plugin))
    return spec


def _worker_init(spec, detector: str, cfg: _Config, blocked: str | None) -> None:
    from .plugins import make_plugin_manager, registry

    if blocked is not None:
        os.environ["HEADPUPPET_DISABLE_PLUGINS"] = blocked
    pm = make_plugin_manager(load_entrypoints=False)
    for name, modname, file, obj in spec:
        if pm.has_plugin(name):
            continue
        if obj is not None:
            pm.register(obj, name=name)
            continue
        try:
            module = importlib.import_module(modname)
        except ImportError:
            if file is None:
                raise
            s = importlib.util.spec_from_file_location(modname, file)
            module = importlib.util.module_from_spec(s)
            sys.modules[modname] = module
            s.loader.exec_module(module)
        pm.register(module, name=name)
    _WORKER["detector"] = registry(pm, "landmarks").create(detector)
    _WORKER["cfg"] = cfg


def _worker_run(item: Item) -> VideoResult:
    return _run_one(item, _WORKER["detector"], _WORKER["cfg"])


# ------------------------------------------------------------------------------------------ main


def preprocess(inputs: list[Path], out: Path, size: int = 256, every: int = 1, max_frames: int | None = None,
               detector: str = "mediapipe", workers: int = 1, shard: tuple[int, int] = (0, 1),
               preview: bool = False, pm=None, reporter: Reporter | None = None) -> Summary:
    """Preprocess videos into the dataset at ``out`` (see the module docstring).

    Args:
        inputs: video files, folders of image frames, folders of those (searched recursively).
        out: the dataset folder (created; an existing dataset is resumed, with the same size and
            detector).
        size: crop side in pixels.
        every: keep every ``every``-th frame of each video.
        max_frames: keep at most this many sampled frames per video (before dropping faceless ones).
        detector: name of a ``landmarks`` plugin.
        workers: processes working on different videos at once (each loads its own detector).
        shard: ``(i, n)``: process only every ``n``-th input from ``i``.
        preview: write ``out/preview.png`` (crops, landmark images, overlays).
        pm: plugin manager (default: a fresh one).
        reporter: progress reporting (default: silent).

    Returns:
        The :class:`Summary`. Per-video problems are in it; only problems with the whole run
        (bad arguments, unknown detector, an ``out`` that is not a compatible dataset) raise.
    """
    from .plugins import make_plugin_manager, registry

    reporter = reporter or NULL
    t_start = time.perf_counter()
    if size < 8:
        raise HeadpuppetError(f"size must be at least 8 pixels, got {size}")
    if every < 1:
        raise HeadpuppetError(f"every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise HeadpuppetError(f"max-frames must be at least 1, got {max_frames}")
    if workers < 1:
        raise HeadpuppetError(f"workers must be at least 1, got {workers}")
    if not inputs:
        raise HeadpuppetError("no INPUT given; pass video files or folders")
    out = Path(out)
    pm = pm if pm is not None else make_plugin_manager()

    det = registry(pm, "landmarks").create(detector)  # fails early, one line, on an unknown name
    has_iris = bool(getattr(det, "has_iris", False))
    write_dataset_json(out, size, detector, has_iris)

    items = shard_items(assign_ids(discover([Path(p) for p in inputs], exclude=out)), shard)
    cfg = _Config(out=out, size=int(size), every=int(every), max_frames=max_frames, detector=detector)
    summary = Summary(out=out)
    todo: list[Item] = []
    for it in items:
        if it.kind == "error":
            summary.results.append(VideoResult(str(it.source), it.id, "failed", reason=it.reason))
        elif is_done(out, it.id):
            summary.results.append(VideoResult(str(it.source), it.id, "skipped", reason="already done"))
        else:
            todo.append(it)
    if summary.skipped:
        reporter.info(f"{len(summary.skipped)} videos already done in {out}; skipping them")

    try:
        if todo:
            with reporter.task("preprocess", total=len(todo)) as task:
                def record(r: VideoResult) -> None:
                    summary.results.append(r)
                    if r.status == "failed":
                        reporter.warn(f"{r.source}: {r.reason}")
                    task.advance(1, frames=summary.frames_kept, failed=len(summary.failed))

                if workers == 1 or len(todo) == 1:
                    for it in todo:
                        record(_run_one(it, det, cfg))
                else:
                    _close(det)  # each worker process loads its own
                    _run_pool(todo, pm, detector, cfg, min(workers, len(todo)), record)
    finally:
        _close(det)

    if preview:
        try:
            summary.preview = write_preview(out, prefer=[r.id for r in summary.done])
        except HeadpuppetError as exc:
            reporter.warn(f"no preview: {exc}")
    summary.seconds = time.perf_counter() - t_start
    return summary


def _close(det) -> None:
    close = getattr(det, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def _run_pool(todo: list[Item], pm, detector: str, cfg: _Config, workers: int, record) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    # spawn: mediapipe (and torch) hold threads and native state that a fork would copy broken
    ctx = mp.get_context("spawn")
    # only the plugin that provides the detector: importing every plugin (torch for the losses...)
    # would cost each worker seconds of start-up for nothing
    from .plugins import registry

    owner = registry(pm, "landmarks")[detector].plugin
    spec = [s for s in _plugin_spec(pm) if s[0] == owner]
    blocked = os.environ.get("HEADPUPPET_DISABLE_PLUGINS")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                             initargs=(spec, detector, cfg, blocked)) as pool:
        futures = {pool.submit(_worker_run, it): it for it in todo}
        try:
            for fut in as_completed(futures):
                it = futures[fut]
                try:
                    record(fut.result())
                except BrokenProcessPool as exc:
                    record(_failure(it, RuntimeError(f"worker process died ({exc})")))
                except Exception as exc:  # noqa: BLE001
                    record(_failure(it, exc))
        except KeyboardInterrupt:
            # the workers got the same Ctrl-C; do not wait for queued videos
            pool.shutdown(wait=False, cancel_futures=True)
            raise


# ---------------------------------------------------------------------------------------- preview


def write_preview(out: Path, prefer: list[str] | None = None, rows: int = 8, cell: int = 128) -> Path:
    """Write ``out/preview.png``: per sampled frame, the crop | its landmark image | the overlay.

    Samples up to ``rows`` videos spread evenly over those in ``prefer`` (the ones just processed;
    all videos when none), with frames spread over each video, so a person can check crops and
    landmarks.
    """
    from PIL import Image, ImageDraw

    from .media.landmarks import rasterise

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
