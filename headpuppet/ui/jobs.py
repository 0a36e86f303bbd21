"""The functions behind the page: inspecting the uploads (faces and landmarks of the source shots
and of a few driver frames) and animating a video like ``headpuppet animate``, with progress onto
Gradio's bar. Errors a person can fix come back as :class:`~headpuppet.errors.HeadpuppetError`
(inspection: as a message line).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import HeadpuppetError, MediaError
from ..fewshot.pipeline import render_video as animate
from ..fewshot.session import load_person
from ..fewshot.sources import load_source_images, open_driver, sample_video_frames
from ..progress import Reporter, Task
from .config import UiConfig
from .helpers import safe_name, status_md, upload_paths, uploaded_driver
from .previews import detect_preview, face_preview, tile_strip

log = logging.getLogger("headpuppet.ui")


def inspect_source(cfg: UiConfig, files, person: str | None = None, model: str | None = None
                   ) -> tuple[np.ndarray | None, str]:
    """The source shots' faces and landmarks, before anything runs: ``(preview image, message)``."""
    try:
        if person:
            _, p = cfg.person_folder(person)
            tiles = [face_preview(f, pts, None if p.iris is None else p.iris[i])
                     for i, (f, pts) in enumerate(zip(p.frames[:8], p.points[:8]))]
            return tile_strip(tiles), status_md(True, f"fine-tuned person {Path(person).name}: {p.num_shots} "
                                                      f"shot(s), {p.finetune_steps} fine-tuning steps", [])
        paths = upload_paths(files)
        if not paths:
            return None, "Upload a photo of the person (or several shots of them)."
        src = load_source_images(paths, k=8)
        strip, lines, ok = detect_preview(src.images, src.labels, cfg.default_detector(model))
        good = ok == len(src.images)
        title = (f"{len(src.images)} shot(s), a face in each" if good else
                 f"no face in {len(src.images) - ok} of {len(src.images)} shot(s): use photos where the face "
                 "is clearly visible")
        return strip, status_md(good, title, lines)
    except HeadpuppetError as exc:
        return None, status_md(False, str(exc), [])
    except Exception as exc:  # noqa: BLE001 - the page must show a line, not a traceback
        log.exception("inspecting the source failed")
        return None, status_md(False, f"could not read the upload ({type(exc).__name__}: {exc})", [])


def check_driver(cfg: UiConfig, path: str | None):
    """Open the driver video and refuse one that is longer than ``cfg.max_seconds``."""
    if not path:
        raise MediaError("upload a driver video (an .mp4 of a face talking)")
    driver = open_driver(path)
    seconds = driver.num_frames / driver.fps if driver.fps else 0.0
    if cfg.max_seconds and seconds > cfg.max_seconds:
        raise MediaError(f"the driver video is {seconds:.0f} s long; this page takes up to {cfg.max_seconds:g} s "
                         f"(trim it, or start the page with --max-seconds {int(seconds) + 1})")
    return driver


def inspect_driver(cfg: UiConfig, video, model: str | None = None) -> tuple[np.ndarray | None, str]:
    """A few frames of the driver with their faces and landmarks: ``(preview image, message)``."""
    try:
        path = uploaded_driver(video)
        if not path:
            return None, "Upload a driver video: a face talking or moving (its audio is kept)."
        driver = check_driver(cfg, path)
        frames, idx = sample_video_frames(path, 4)
        strip, lines, ok = detect_preview(frames, [f"frame {i}" for i in idx], cfg.default_detector(model))
        seconds = driver.num_frames / driver.fps if driver.fps else 0.0
        info = (f"{driver.num_frames} frames at {driver.fps:g} fps ({seconds:.1f} s), "
                f"{driver.width}x{driver.height}, " + ("with audio" if driver.has_audio else "no audio"))
        if ok == 0:
            return strip, status_md(False, "no face in the sampled frames of the driver: use a video that shows "
                                           "a face", [info])
        return strip, status_md(True, f"a face in {ok} of {len(frames)} sampled frames", [info])
    except HeadpuppetError as exc:
        return None, status_md(False, str(exc), [])
    except Exception as exc:  # noqa: BLE001
        log.exception("inspecting the driver failed")
        return None, status_md(False, f"could not read the driver ({type(exc).__name__}: {exc})", [])


class ProgressReporter(Reporter):
    """:class:`~headpuppet.progress.Reporter` onto a callback ``(fraction, description)``
    (Gradio's ``gr.Progress``); each task (landmarks, frames, fine-tuning) fills the bar once."""

    def __init__(self, callback: Callable[[float, str], None], stages: dict[str, str] | None = None):
        self.callback = callback
        self.stages = stages or {}
        self.messages: list[str] = []

    @contextmanager
    def task(self, description: str, total: int | None = None):
        desc = self.stages.get(description, description)
        t = _ProgressTask(self.callback, desc, total)
        t.update(0)
        yield t

    def info(self, message: str) -> None:
        self.messages.append(message)

    def warn(self, message: str) -> None:
        self.messages.append(message)


class _ProgressTask(Task):
    def __init__(self, callback, desc: str, total: int | None):
        self.callback, self.desc, self.total, self.done = callback, desc, total, 0
        self._last = 0.0

    def advance(self, n: int = 1, **fields) -> None:
        self.update(self.done + n)

    def update(self, completed: int | None = None, total: int | None = None, **fields) -> None:
        if total is not None:
            self.total = total
        if completed is not None:
            self.done = completed
        now = time.perf_counter()
        if self.total and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self.callback(min(1.0, self.done / max(self.total, 1)), f"{self.desc} {self.done}/{self.total}")


STAGES = {"landmarks": "driver landmarks", "frames": "rendering frames"}


def run_animation(cfg: UiConfig, files, person: str | None, video, motion: str = "relative", smooth: float = 1.0,
                  finetune_steps: int = 0, side_by_side: bool = False, paste: bool = False,
                  model: str | None = None, progress: Callable[[float, str], None] | None = None
                  ) -> tuple[str, str]:
    """Animate like ``headpuppet animate`` and return ``(result video path, summary)``.

    Raises :class:`HeadpuppetError` with a readable message for anything a person can fix.
    """
    progress = progress or (lambda f, d: None)
    driver_path = uploaded_driver(video)
    driver = check_driver(cfg, driver_path)
    sources = [person] if person else upload_paths(files)
    if not sources:
        raise MediaError("upload a photo of the person first (or choose a fine-tuned person)")
    reporter = ProgressReporter(progress, {**STAGES, "fine-tune": "fine-tuning"})
    t0 = time.perf_counter()
    progress(0.0, "loading the model and the photo")
    loaded = load_person(sources, checkpoint=model or None, device=cfg.device, pm=cfg.pm, shots=8,
                         finetune_steps=int(finetune_steps or 0), reporter=reporter, cache=cfg.cache)
    stem = Path(sources[0]).stem if not person else Path(person).name
    out_dir = Path(cfg.out_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{threading.get_ident() % 10000}"
    out = out_dir / f"{safe_name(stem)}_{safe_name(Path(driver_path).stem)}.mp4"
    result = animate(loaded.animator, loaded.person, driver, out, detector=loaded.detector,
                     relative=motion != "absolute", smooth=float(smooth or 0.0), side_by_side=bool(side_by_side),
                     paste=bool(paste), reporter=reporter)
    seconds = time.perf_counter() - t0
    lines = [f"{result.frames} frames at {result.fps:g} fps" + (" with the driver's audio" if result.has_audio else ""),
             f"{seconds:.1f} s in all on {cfg.device}"]
    if result.bridged:
        lines.append(f"{result.bridged} driver frame(s) had no face and were bridged from their neighbours")
    for label, n in result.several_faces:
        lines.append(f"{n} faces in the source {label}; the largest was used")
    lines += reporter.messages
    return str(result.output), status_md(True, f"done: {out.name}", lines)
