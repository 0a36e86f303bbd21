"""The page's webcam tab: one browser-webcam frame in, one animated frame out, through a
:class:`~headpuppet.live.LiveAnimator` kept per browser tab (:class:`WebcamSession`).
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from ..errors import MediaError
from ..fewshot.session import load_person
from ..live import LiveAnimator
from .config import UiConfig
from .helpers import upload_paths


class WebcamSession:
    """A :class:`~headpuppet.live.LiveAnimator` for one browser tab's webcam, rebuilt when the
    source or the options change."""

    def __init__(self, cfg: UiConfig, key: tuple, sources: list[str], model: str | None, relative: bool,
                 smooth: float, fps: float):
        loaded = load_person(sources, checkpoint=model or None, device=cfg.device, pm=cfg.pm, cache=cfg.cache)
        self.key = key
        self.live = LiveAnimator(loaded.animator, loaded.person, detector=loaded.detector, relative=relative,
                                 smooth=smooth, fps=fps)
        self.times: list[float] = []


def webcam_frame(cfg: UiConfig, frame, files, person: str | None, motion: str, smooth: float,
                 model: str | None, session: WebcamSession | None, fps: float = 25.0):
    """One webcam frame in, one animated frame out: ``(frame, session, status)``."""
    if frame is None:
        return None, session, "waiting for the webcam"
    sources = [person] if person else upload_paths(files)
    if not sources:
        raise MediaError("upload a photo of the person first (or choose a fine-tuned person)")
    key = (tuple(sources), model, motion, float(smooth or 0.0))
    if session is None or session.key != key:
        session = WebcamSession(cfg, key, sources, model, motion != "absolute", float(smooth or 0.0), fps)
    frame = np.ascontiguousarray(np.asarray(frame)[..., :3], np.uint8)
    t = time.perf_counter()
    out = session.live.step(frame)
    session.times.append((time.perf_counter() - t) * 1e3)
    if max(out.shape[:2]) < 320:      # a small model's frames, enlarged for the page
        k = 320 // max(out.shape[:2]) + 1
        out = cv2.resize(out, (out.shape[1] * k, out.shape[0] * k), interpolation=cv2.INTER_LINEAR)
    recent = session.times[-25:]
    status = (f"{session.live.frames} frames, {np.mean(recent):.0f} ms per frame"
              + ("" if session.live.faces else " - no face seen yet"))
    return out, session, status
