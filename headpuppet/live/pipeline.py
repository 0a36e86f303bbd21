"""The per-frame pipeline of live driving: :class:`LiveAnimator` tracks each driver frame (detect,
fix the crop box, smooth, retarget; steps 1-4 of :mod:`headpuppet.live`) and renders it (G,
paste-back, side-by-side; step 5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import MediaError
from ..fewshot.compositing import paste_back
from ..fewshot.retarget import transfer_relative
from ..media.crop import CropBox, crop_frame, face_crop_box, iris_to_crop, to_crop
from ..protocols import largest_face
from .smoothing import smoothing_filter


@dataclass
class Tracked:
    """One driver frame after detection and retargeting, ready to render."""

    frame: np.ndarray
    points: np.ndarray            # (68, 2) crop px, what G is driven with
    iris: np.ndarray | None       # (2, 3) or None
    face: bool                    # a face was found in this frame
    still: bool = False           # no face seen yet: the person is shown as is
    detect_ms: float = 0.0


def warm_up(animator, person, compile: bool = False) -> None:
    """Render ``person``'s own pose once, as :class:`LiveAnimator` renders (batch 1): with ``compile``
    this is the compile (tens of seconds on a CPU), done before the stream opens so that it holds up
    none of its frames."""
    iris = person.iris[:1] if (animator.uses_iris and person.iris is not None) else None
    animator.render(person, person.points[:1], iris, batch_size=1, compile=compile)


class LiveAnimator:
    """Per-frame, causal ``animate``: ``step(frame) -> output frame`` (see :mod:`headpuppet.live`).

    :meth:`track` (detection, smoothing, retargeting) and :meth:`render` (G, compositing) can run
    in different threads, one frame apart. Not thread-safe within one of them.
    """

    def __init__(self, animator, person, *, detector=None, relative: bool = True, smooth: float = 1.0,
                 fps: float = 25.0, side_by_side: bool = False, paste: bool = False, reference_frames: int = 5,
                 compile: bool = False):
        if paste and (person.image is None or person.box is None):
            raise MediaError("--paste-back needs the full source photo, which this source does not have")
        self.animator, self.person = animator, person
        self.detector = detector or animator.make_detector()
        self.relative, self.smooth, self.fps = bool(relative), float(smooth), float(fps or 25.0)
        self.side_by_side, self.paste = bool(side_by_side), bool(paste)
        self.compile = bool(compile)  # G through torch.compile (Animator.render); warm_up() compiles it
        self.reference_frames = max(1, int(reference_frames))
        self.size = animator.size
        self.use_iris = bool(animator.uses_iris)
        self.src_iris = person.iris[0] if person.iris is not None else None
        self._still: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        """Start again: new crop box and reference from the next frames with a face."""
        self.detector.reset()
        self.box = None
        self._filter = smoothing_filter(self.smooth, self.fps, self.size)
        self._iris_filter = smoothing_filter(self.smooth, self.fps, self.size)
        self._ref: list[np.ndarray] = []
        self._ref_iris: list[np.ndarray] = []
        self._last: tuple[np.ndarray, np.ndarray | None] | None = None
        self.frames = self.faces = self.held = 0

    # -------------------------------------------------------------- track
    def track(self, frame: np.ndarray) -> Tracked:
        t0 = time.perf_counter()
        frame = np.ascontiguousarray(frame)
        faces = self.detector.detect(frame)
        self.frames += 1
        if faces:
            face = largest_face(faces)
            if self.box is None:
                self.box = face_crop_box(face.points, frame.shape[:2])
            pts = to_crop(face.points, self.box, self.size)
            iris = iris_to_crop(face.iris, self.box, self.size) if face.iris is not None else None
            if not (np.isfinite(pts).all() and (iris is None or np.isfinite(iris).all())):
                faces = []
        if not faces:
            if self._last is None:
                return Tracked(frame, self.person.points[0], self.src_iris, False, still=True,
                               detect_ms=(time.perf_counter() - t0) * 1e3)
            self.held += 1
            pts, iris = self._last
            return Tracked(frame, *self._retarget(pts, iris), False, detect_ms=(time.perf_counter() - t0) * 1e3)
        self.faces += 1
        if self._filter is not None:
            pts = self._filter(pts)
            if iris is not None:
                iris = self._iris_filter(iris)
        if len(self._ref) < self.reference_frames:
            self._ref.append(pts)
            if iris is not None:
                self._ref_iris.append(iris)
        self._last = (pts, iris)
        out_pts, out_iris = self._retarget(pts, iris)
        return Tracked(frame, out_pts, out_iris, True, detect_ms=(time.perf_counter() - t0) * 1e3)

    @property
    def reference(self) -> np.ndarray | None:
        """The driver's reference landmarks (crop px): mean of the first frames with a face."""
        return np.mean(self._ref, axis=0) if self._ref else None

    def _retarget(self, pts: np.ndarray, iris: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.relative:
            return pts, iris if self.use_iris else None
        ref = self.reference
        ref_iris = np.mean(self._ref_iris, axis=0) if iris is not None and len(self._ref_iris) == len(self._ref) else None
        use_iris = self.use_iris and ref_iris is not None and self.src_iris is not None
        out, out_iris = transfer_relative(np.stack([ref, pts]), self.person.points[0], 0,
                                          np.stack([ref_iris, iris]) if use_iris else None,
                                          self.src_iris if use_iris else None)
        return out[1], out_iris[1] if out_iris is not None else None

    # -------------------------------------------------------------- render
    def warm_up(self) -> None:
        """:func:`warm_up` with this animator's model, person and ``compile``."""
        warm_up(self.animator, self.person, self.compile)

    def render(self, tracked: Tracked) -> np.ndarray:
        if tracked.still and self._still is not None:
            fake = self._still
        else:
            iris = tracked.iris[None] if (self.use_iris and tracked.iris is not None) else None
            fake = self.animator.render(self.person, tracked.points[None], iris, batch_size=1,
                                        compile=self.compile)[0]
            if tracked.still:
                self._still = fake
        if self.paste:
            out = paste_back(self.person.image, fake, self.person.box,
                             points=np.stack([tracked.points, self.person.points[0]]))
        else:
            out = fake
        if self.side_by_side:
            frame = tracked.frame
            box = self.box
            if box is None:   # no face yet: the middle square of the frame
                h, w = frame.shape[:2]
                s = min(h, w)
                box = CropBox((w - s) // 2, (h - s) // 2, s)
            drv = crop_frame(frame, box, out.shape[0])
            out = np.concatenate([drv, out], axis=1)
        return out

    def step(self, frame: np.ndarray) -> np.ndarray:
        return self.render(self.track(frame))

    def output_size(self, frame_hw: tuple[int, int] | None = None) -> tuple[int, int]:
        """(W, H) of the frames :meth:`render` makes."""
        if self.paste:
            h, w = self.person.image.shape[:2]
        else:
            h = w = self.size
        return (w + h if self.side_by_side else w, h)
