"""The small protocols that plugins implement, with their shapes and ranges.

Conventions used across the project:

* frames are ``(H, W, 3) uint8 RGB`` numpy arrays at the edges (files, detectors) and
  ``(B, 3, H, W) float32`` tensors in ``[-1, 1]`` inside the networks;
* landmarks are ``(68, 2) float32`` pixel coordinates ``(x, y)`` in the 68-point convention of
  iBUG 300-W / the paper (0-16 jaw, 17-21 right brow, 22-26 left brow, 27-30 nose bridge,
  31-35 nostrils, 36-41 right eye, 42-47 left eye, 48-59 outer lips, 60-67 inner lips; "right"
  is the subject's right, which appears on the image's left);
* irises are ``(2, 3) float32`` rows ``(cx, cy, radius)`` in pixels, right eye first, or ``None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np


@dataclass
class Face:
    """One detected face.

    Attributes:
        points: ``(68, 2) float32`` landmark pixels ``(x, y)``.
        iris: ``(2, 3) float32`` ``(cx, cy, r)`` for the right then left iris, or ``None`` when the
            detector has no iris model.
        box: ``(x0, y0, x1, y1)`` face box in pixels (by default the landmarks' bounding box).
        score: detector confidence in ``[0, 1]`` where the detector has one, else 1.
    """

    points: np.ndarray
    iris: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    score: float = 1.0

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float32)
        if self.points.shape != (68, 2):
            raise ValueError(f"Face.points must be (68, 2), got {self.points.shape}")
        if self.iris is not None:
            self.iris = np.asarray(self.iris, dtype=np.float32)
            if self.iris.shape != (2, 3):
                raise ValueError(f"Face.iris must be (2, 3), got {self.iris.shape}")
        if self.box is None:
            x0, y0 = self.points.min(0)
            x1, y1 = self.points.max(0)
            self.box = (float(x0), float(y0), float(x1), float(y1))

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.box
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


def largest_face(faces: list[Face]) -> Face | None:
    """The face every stage uses from a frame with several: the one with the largest box area
    (the first of equal ones), or ``None`` for ``[]``.

    Detectors return faces largest first by contract (:class:`LandmarkDetector`); choosing by area
    again costs nothing and protects against a plugin that does not sort.
    """
    return max(faces, key=lambda f: f.area) if faces else None


@runtime_checkable
class LandmarkDetector(Protocol):
    """Finds faces in one frame.

    ``detect(frame)`` takes a ``(H, W, 3) uint8 RGB`` frame and returns every face found as a
    :class:`Face`, largest first; an empty list when there is none. Detectors may keep state
    between calls (tracking across video frames); ``reset()`` forgets it before a new video.

    Optionally, ``one_face()`` returns a new detector of the same kind that looks for one face only,
    for footage where a frame was just seen to show one face; a tracking detector that need not
    look for more faces in every frame is cheaper (MediaPipe's: about 5 against 8 ms a frame).
    :func:`headpuppet.media.detection.detect_frames` uses it (not part of the checked protocol).
    """

    name: str
    has_iris: bool

    def detect(self, frame: np.ndarray) -> list[Face]: ...

    def reset(self) -> None: ...


@runtime_checkable
class PerceptualNetwork(Protocol):
    """A frozen feature extractor for the content loss (an ``nn.Module``).

    ``forward(x)`` takes ``(B, 3, H, W) float32`` images in ``[-1, 1]`` and returns the list of
    activations at the layers the loss compares (the network does its own input normalisation).
    ``weights`` names the entries of the weights manifest it loads (empty for weight-free networks);
    the loss weight is the config's (``loss.perceptual``), not the network's.
    """

    weights: tuple[str, ...]

    def __call__(self, x: Any) -> list[Any]: ...


@dataclass
class WeightSpec:
    """One pretrained-weights file the project can manage (``headpuppet weights``).

    Attributes:
        name: short name, also the file stem under the weights directory (``NAME.safetensors``).
        description: one line for ``headpuppet weights list``.
        source: the original URL where the published file is downloaded from.
        source_sha256: sha256 of the published original file (checked on import and download).
        licence: the licence of the published weights.
        converter: callable ``(original_path) -> dict[str, Tensor]`` converting the original file
            into the project's state dict.
        filename: the original file's name (as published).
    """

    name: str
    description: str
    source: str
    source_sha256: str | None
    licence: str
    converter: Callable[[str], dict]
    filename: str = ""
    extra: dict = field(default_factory=dict)
