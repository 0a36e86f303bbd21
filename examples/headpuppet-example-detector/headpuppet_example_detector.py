"""headpuppet-example-detector: a tiny third-party landmark detector plugin for headpuppet.

It registers the landmark detector ``"example"``: OpenCV's Haar-cascade face detector (shipped
inside opencv-python, so there are no weights to download) finds face boxes, and a fixed mean face
(``TEMPLATE``, 68 iBUG points in box units) is placed in each box. The points do not follow the
mouth or the eyes, so this detector is a teaching example (and a stand-in on machines where no
real detector runs), not something to train a talking head with.

Use it with ``headpuppet preprocess --detector example`` once installed (``pip install -e .``).
"""

from __future__ import annotations

import cv2
import numpy as np

from headpuppet import hookimpl
from headpuppet.errors import MediaError
from headpuppet.protocols import Face

__version__ = "0.1.0"

# Mean 68-point face in Haar-box units ((x - x0) / w, (y - y0) / h), made by tools/make_template.py
# from the 31 photos of headpuppet's shared test faces, with headpuppet's "mediapipe" detector.
TEMPLATE = np.array([
    (0.066, 0.388), (0.073, 0.510), (0.086, 0.634), (0.114, 0.753),
    (0.156, 0.853), (0.214, 0.933), (0.291, 1.005), (0.381, 1.061),
    (0.500, 1.086), (0.619, 1.061), (0.709, 1.005), (0.786, 0.933),
    (0.844, 0.853), (0.886, 0.753), (0.914, 0.634), (0.927, 0.510),
    (0.934, 0.388), (0.159, 0.283), (0.185, 0.241), (0.244, 0.225),
    (0.321, 0.231), (0.415, 0.268), (0.585, 0.268), (0.679, 0.231),
    (0.756, 0.225), (0.815, 0.241), (0.841, 0.283), (0.500, 0.347),
    (0.500, 0.438), (0.500, 0.524), (0.500, 0.625), (0.391, 0.645),
    (0.441, 0.656), (0.500, 0.660), (0.559, 0.656), (0.609, 0.645),
    (0.224, 0.364), (0.269, 0.339), (0.337, 0.340), (0.392, 0.376),
    (0.332, 0.385), (0.272, 0.385), (0.608, 0.376), (0.663, 0.340),
    (0.731, 0.339), (0.776, 0.364), (0.728, 0.385), (0.668, 0.385),
    (0.339, 0.798), (0.379, 0.765), (0.451, 0.738), (0.500, 0.746),
    (0.549, 0.738), (0.621, 0.765), (0.661, 0.798), (0.627, 0.841),
    (0.571, 0.876), (0.500, 0.888), (0.429, 0.876), (0.373, 0.841),
    (0.353, 0.798), (0.418, 0.785), (0.500, 0.786), (0.582, 0.785),
    (0.647, 0.798), (0.582, 0.816), (0.500, 0.826), (0.418, 0.816),
], dtype=np.float32)

# iBUG index of each point's mirror image (the subject's right <-> left).
MIRROR = np.array(
    list(range(16, -1, -1))                       # jaw
    + list(range(26, 16, -1))                     # brows
    + [27, 28, 29, 30] + [35, 34, 33, 32, 31]     # nose bridge, nostrils
    + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40]  # eyes
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]     # outer lips
    + [64, 63, 62, 61, 60, 67, 66, 65]                     # inner lips
)


def haar_boxes(image: np.ndarray, min_size: float = 0.05) -> np.ndarray:
    """Face boxes ``(N, 4)`` as ``(x0, y0, w, h)`` pixels, largest first.

    ``min_size`` is the smallest face side as a fraction of the image's shorter side.
    """
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    grey = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
    side = max(16, int(min(image.shape[:2]) * min_size))
    boxes = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(side, side))
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return boxes[np.argsort(-boxes[:, 2] * boxes[:, 3], kind="stable")]


class ExampleDetector:
    """Haar face boxes + a mean-face template.

    Args:
        min_size: smallest face side, as a fraction of the image's shorter side.
    """

    name = "example"
    has_iris = False  # no iris model: Face.iris stays None

    def __init__(self, min_size: float = 0.05):
        self.min_size = float(min_size)

    def reset(self) -> None:
        """No state is kept between frames, so there is nothing to forget."""

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in one ``(H, W, 3) uint8 RGB`` frame, largest first; ``[]`` when there is none."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            # A HeadpuppetError subclass: the CLI prints it as one line instead of a traceback.
            raise MediaError("the example detector needs an (H, W, 3) uint8 RGB frame")
        faces = []
        for x0, y0, w, h in haar_boxes(frame, self.min_size):
            points = TEMPLATE * [w, h] + [x0, y0]  # (68, 2) pixels
            faces.append(Face(points=points, box=(x0, y0, x0 + w, y0 + h)))
        return faces  # haar_boxes is sorted largest first already


@hookimpl
def register_landmark_detectors(register):
    register("example", ExampleDetector)
