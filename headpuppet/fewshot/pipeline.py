"""The ``headpuppet animate`` render loop: a loaded model + person + driver in, a video out.

Two passes over the driver (Zakharov et al. 2019, section 4, "puppeteering"): pass 1
(:func:`track_driver`) finds the driver's landmarks (on several threads, or in the helper process of
:mod:`headpuppet.fewshot.drivertrack`, started before the model loaded) and ONE stable crop box;
the track is cleaned up and retargeted onto the person (:mod:`headpuppet.fewshot.retarget`); pass 2
renders with G in batches (:meth:`~headpuppet.fewshot.animator.Animator.render`) and encodes with the
driver's frame rate, frame count and audio (it decodes the driver again only for ``side_by_side``). :func:`render_video` is shared by the Python API
(:func:`headpuppet.animate`), the web UI and bench/animate.py.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import HeadpuppetError, MediaError
from ..media.crop import crop_frame, face_crop_box, iris_to_crop, to_crop
from ..media.detection import close_detector, detection_threads
from ..media.video import VideoWriter
from ..progress import NULL, Reporter
from .animator import Animator
from .compositing import paste_back
from .drivertrack import DriverTrackJob, RawTrack, detect_driver
from .person import Person
from .retarget import prepare_track
from .sources import Driver

log = logging.getLogger(__name__)


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


#: frames kept for the encoder, handed to it together (:class:`~headpuppet.media.video.VideoWriter`'s
#: ``buffer_bytes``): a 60 s driver at 128 px in one go, at 256 px in three
ENCODE_BUFFER_BYTES = 128 * 2**20


def track_driver(driver: Driver, detector, size: int, reporter: Reporter | None = None):
    """Pass 1 over the driver: landmarks per frame, ONE stable crop box, landmarks in crop px.

    ``detector``: one detector, or a list of them: threads then detect on blocks of the driver at
    once, with the same landmarks (:mod:`headpuppet.media.detection`).
    Returns ``(points (T, 68, 2) crop px, found (T,), iris (T, 2, 3) | None, box)``.
    """
    return crop_track(detect_driver(driver, detector, reporter), size)


def crop_track(raw: RawTrack, size: int):
    """:class:`~headpuppet.fewshot.drivertrack.RawTrack` -> what :func:`track_driver` returns: ONE crop
    box for the frames with a face, the landmarks (and irises, where every such frame has them) in it."""
    box = face_crop_box(raw.points[raw.found], raw.hw)
    points = to_crop(raw.points, box, size)
    iris = None
    if raw.iris is not None and np.isfinite(raw.iris[raw.found]).all():
        iris = iris_to_crop(raw.iris, box, size)
    return points, raw.found, iris, box


def _more_detectors(animator: Animator, detector, n: int) -> list:
    """``n`` more detectors of ``detector``'s plugin for pass 1's threads; none when the plugin cannot
    be made again by name (a detector object from elsewhere): pass 1 then runs on one thread."""
    name = getattr(detector, "name", None)
    if not name or n <= 0:
        return []
    try:
        return [animator.make_detector(name) for _ in range(n)]
    except HeadpuppetError as exc:
        log.debug("pass 1 runs on one thread: %s", exc)
        return []


def render_video(animator: Animator, person: Person, driver: Driver, output: str | Path, *, detector=None,
                 relative: bool = True, smooth: float = 1.0, side_by_side: bool = False, paste: bool = False,
                 batch_size: int = 8, amp: str | None = None, channels_last: bool | None = None,
                 compile: bool = False, detect_threads: int | None = None,
                 driver_track: DriverTrackJob | None = None, reporter: Reporter | None = None) -> AnimateResult:
    """Animate ``person`` with ``driver`` into the video ``output`` (driver's fps, frame count, audio).

    Pass 1 finds the driver's landmarks (one stable crop box), bridges frames without a face,
    smooths and (``relative``) retargets them onto the person (:mod:`headpuppet.fewshot.retarget`); pass 2
    renders with G in batches and encodes. ``side_by_side`` writes driver crop |
    result; ``paste`` composites the result back into the person's full first image.
    ``detect_threads``: detectors working on pass 1 at once (default: the usable CPUs, at most 4;
    more detectors of the same plugin as ``detector`` are made for them).
    ``compile``: G through :func:`torch.compile` (:meth:`Animator.render`), compiled once before the
    frames (its own progress line and ``timings["compile"]``); every batch then has the same shape.
    ``driver_track``: pass 1 already under way in a helper process
    (:meth:`DriverTrackJob.start <headpuppet.fewshot.drivertrack.DriverTrackJob.start>` on the same
    ``driver``): its landmarks are used when it ran ``detector``'s plugin and succeeded, else pass 1
    runs here as without it. It is cancelled in any case.
    """
    reporter = reporter or NULL
    output = Path(output)
    if paste and (person.image is None or person.box is None):
        raise MediaError("--paste-back needs the full source photo, which this source does not have")
    detector = detector or animator.make_detector()
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    raw = None
    if driver_track is not None:
        raw = driver_track.result(getattr(detector, "name", None), reporter)  # cancels the helper in any case
        if raw is not None and driver_track.seconds is not None:
            timings["landmarks_helper"] = driver_track.seconds  # the helper's time, mostly beside the start-up
    if raw is None:
        threads = detection_threads() if detect_threads is None else max(1, int(detect_threads))
        extra = _more_detectors(animator, detector, threads - 1)
        try:
            raw = detect_driver(driver, [detector, *extra], reporter)
        finally:
            for d in extra:
                close_detector(d)
    points, found, iris, box = crop_track(raw, animator.size)
    timings["landmarks"] = time.perf_counter() - t0
    src_iris = person.iris[0] if person.iris is not None else None
    track = prepare_track(points, found, iris, smooth=smooth, relative=relative, source=person.points[0],
                          source_iris=src_iris, reference="neutral")
    drv_iris = track.iris if animator.uses_iris else None
    if compile and len(track.points):
        t = time.perf_counter()
        with reporter.task("compile G (once per model and batch size)"):
            animator.render(person, track.points[:batch_size], None if drv_iris is None else drv_iris[:batch_size],
                            batch_size=batch_size, amp=amp, channels_last=channels_last, compile=True)
        timings["compile"] = time.perf_counter() - t
    t_render = 0.0
    n = 0
    with VideoWriter(output, driver.fps, audio_from=driver.path if driver.is_video else None,
                     buffer_bytes=ENCODE_BUFFER_BYTES) as writer, \
            reporter.task("frames", total=len(track.points)) as task:
        batch: list[np.ndarray] = []

        def flush() -> None:
            nonlocal t_render, n
            if not batch:
                return
            idx = slice(n, n + len(batch))
            t = time.perf_counter()
            fakes = animator.render(person, track.points[idx], None if drv_iris is None else drv_iris[idx],
                                    batch_size=batch_size, amp=amp, channels_last=channels_last,
                                    compile=compile)
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

        # the driver's frames are needed again only to show them beside the result
        frames = driver.frames() if side_by_side else itertools.repeat(None)
        for frame in frames:
            if n + len(batch) >= len(track.points):
                break  # the decoder gave more frames than pass 1 saw: keep the counts equal
            batch.append(frame)
            if len(batch) == batch_size:
                flush()
        flush()
        if n != len(track.points):
            raise MediaError(f"{driver.path}: the second read gave {n} frames, the first {len(track.points)}")
        t_finish = time.perf_counter()
    timings["render"] = t_render
    timings["finish"] = time.perf_counter() - t_finish  # the encoder's kept frames, the audio, the file
    seconds = time.perf_counter() - t0
    return AnimateResult(output, n, driver.fps, track.bridged, track.reference, person.several_faces(), seconds,
                         bool(driver.has_audio), timings, str(animator.device))

