"""The ``headpuppet animate`` render loop: a loaded model + person + driver in, a video out.

Two passes over the driver (Zakharov et al. 2019, section 4, "puppeteering"): pass 1
(:func:`track_driver`) finds the driver's landmarks and ONE stable crop box; the track is cleaned up
and retargeted onto the person (:mod:`headpuppet.fewshot.retarget`); pass 2 decodes again, renders
with G in batches (:meth:`~headpuppet.fewshot.animator.Animator.render`) and encodes with the
driver's frame rate, frame count and audio. :func:`render_video` is shared by the Python API
(:func:`headpuppet.animate`), the web UI and bench/animate.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import MediaError, NoFaceError
from ..media.crop import crop_frame, face_crop_box, iris_to_crop, to_crop
from ..media.video import VideoWriter
from ..progress import NULL, Reporter
from ..protocols import largest_face
from .animator import Animator
from .compositing import paste_back
from .person import Person
from .retarget import prepare_track
from .sources import Driver


@dataclass
class AnimateResult:
    """What :func:`render_video` did."""

    output: Path
    frames: int
    fps: float
    bridged: int                       # driver frames without a face, filled from neighbours
    reference: int | None              # driver reference frame (relative mode)
    several_faces: list[tuple[str, int]]
    seconds: float
    has_audio: bool
    timings: dict[str, float] = field(default_factory=dict)
    device: str = ""                   # where G ran


def track_driver(driver: Driver, detector, size: int, reporter: Reporter | None = None):
    """Pass 1 over the driver: landmarks per frame, ONE stable crop box, landmarks in crop px.

    Returns ``(points (T, 68, 2) crop px, found (T,), iris (T, 2, 3) | None, box)``.
    """
    reporter = reporter or NULL
    detector.reset()
    pts, found, irises = [], [], []
    hw = (driver.height, driver.width)
    has_iris = getattr(detector, "has_iris", False)
    with reporter.task("landmarks", total=driver.num_frames) as task:
        for frame in driver.frames():
            hw = frame.shape[:2]
            faces = detector.detect(frame)
            if faces:
                face = largest_face(faces)
                pts.append(face.points)
                irises.append(face.iris if face.iris is not None else np.full((2, 3), np.nan, np.float32))
                found.append(True)
            else:
                pts.append(np.full((68, 2), np.nan, np.float32))
                irises.append(np.full((2, 3), np.nan, np.float32))
                found.append(False)
            task.advance(1)
    points = np.stack(pts) if pts else np.zeros((0, 68, 2), np.float32)
    found_arr = np.asarray(found, bool)
    if not found_arr.any():
        raise NoFaceError(f"no face found in any frame of the driver {driver.path}; use a video that shows a face")
    box = face_crop_box(points[found_arr], hw)
    points = to_crop(points, box, size)
    iris = None
    if has_iris:
        iris_arr = np.stack(irises)
        if np.isfinite(iris_arr[found_arr]).all():
            iris = iris_to_crop(iris_arr, box, size)
    return points, found_arr, iris, box


def render_video(animator: Animator, person: Person, driver: Driver, output: str | Path, *, detector=None,
                 relative: bool = True, smooth: float = 1.0, side_by_side: bool = False, paste: bool = False,
                 batch_size: int = 8, amp: str | None = None, channels_last: bool = False,
                 reporter: Reporter | None = None) -> AnimateResult:
    """Animate ``person`` with ``driver`` into the video ``output`` (driver's fps, frame count, audio).

    Pass 1 finds the driver's landmarks (one stable crop box), bridges frames without a face,
    smooths and (``relative``) retargets them onto the person (:mod:`headpuppet.fewshot.retarget`); pass 2
    decodes again, renders with G in batches and encodes. ``side_by_side`` writes driver crop |
    result; ``paste`` composites the result back into the person's full first image.
    """
    reporter = reporter or NULL
    output = Path(output)
    if paste and (person.image is None or person.box is None):
        raise MediaError("--paste-back needs the full source photo, which this source does not have")
    detector = detector or animator.make_detector()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    points, found, iris, box = track_driver(driver, detector, animator.size, reporter)
    timings["landmarks"] = time.perf_counter() - t0
    src_iris = person.iris[0] if person.iris is not None else None
    track = prepare_track(points, found, iris, smooth=smooth, relative=relative, source=person.points[0],
                          source_iris=src_iris, reference="neutral")
    drv_iris = track.iris if animator.uses_iris else None
    t_render = 0.0
    n = 0
    with VideoWriter(output, driver.fps, audio_from=driver.path if driver.is_video else None) as writer, \
            reporter.task("frames", total=len(track.points)) as task:
        batch: list[np.ndarray] = []

        def flush() -> None:
            nonlocal t_render, n
            if not batch:
                return
            idx = slice(n, n + len(batch))
            t = time.perf_counter()
            fakes = animator.render(person, track.points[idx], None if drv_iris is None else drv_iris[idx],
                                    batch_size=len(batch), amp=amp, channels_last=channels_last)
            t_render += time.perf_counter() - t
            for j, (frame, fake) in enumerate(zip(batch, fakes)):
                if paste:
                    # the face region of both the rendered frame and the photo's own face
                    out = paste_back(person.image, fake, person.box,
                                     points=np.stack([track.points[n + j], person.points[0]]))
                else:
                    out = fake
                if side_by_side:
                    drv = crop_frame(frame, box, animator.size)
                    if out.shape[0] != drv.shape[0]:
                        drv = cv2.resize(drv, (out.shape[0], out.shape[0]))
                    out = np.concatenate([drv, out], axis=1)
                writer.write(out)
            task.advance(len(batch))
            n += len(batch)
            batch.clear()

        for frame in driver.frames():
            if n + len(batch) >= len(track.points):
                break  # the decoder gave more frames than pass 1 saw: keep the counts equal
            batch.append(frame)
            if len(batch) == batch_size:
                flush()
        flush()
        if n != len(track.points):
            raise MediaError(f"{driver.path}: the second read gave {n} frames, the first {len(track.points)}")
    timings["render"] = t_render
    seconds = time.perf_counter() - t0
    return AnimateResult(output, n, driver.fps, track.bridged, track.reference, person.several_faces(), seconds,
                         bool(driver.has_audio), timings, str(animator.device))

