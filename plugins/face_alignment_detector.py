"""Landmark detector "face-alignment": the paper's detector, 2D-FAN (Bulat & Tzimiropoulos, ICCV 2017).

Zakharov et al. 2019, Sec. 4: "we use the face alignment network [Bulat & Tzimiropoulos] to
extract the landmarks". This wraps the ``face_alignment`` package (an optional extra:
``pip install "headpuppet[face-alignment]"``) with its default S3FD face detector. It outputs the
68 iBUG points natively and has no iris model (``has_iris = False``).

The detector is always listed in ``headpuppet plugins``: without the package it is registered as
unavailable with the install line. ``face_alignment`` downloads two files on first use into the
torch hub cache, ``torch.hub.get_dir()/checkpoints``:

* the 2D-FAN TorchScript model, ``2DFAN4-cd938726ad.zip`` (per the package's ``api.models_urls``:
  ``2DFAN4_1.6-c827573f02.zip`` on torch 1.6, ``2DFAN4_1.5-a60332318a.zip`` on torch 1.5);
* the S3FD face detector, ``s3fd-619a316812.pth``,

both from ``https://www.adrianbulat.com/downloads/python-fan/``. Machines without internet must
put them there by hand, so the factory checks for them first and fails with
:class:`~headpuppet.errors.WeightsMissingError` naming each missing file, its URL and the folder,
instead of a network traceback from deep inside the package.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np

from headpuppet import hookimpl
from headpuppet.errors import MediaError, PluginError, WeightsMissingError
from headpuppet.protocols import Face

NAME = "face-alignment"
INSTALL = "install it with: pip install 'headpuppet[face-alignment]'"
BASE_URL = "https://www.adrianbulat.com/downloads/python-fan/"

# The URLs face_alignment 1.4 downloads (face_alignment/api.py and detection/sfd/sfd_detector.py).
# The installed package's own tables are preferred when present, these are the fallback.
DEFAULT_FAN_URLS = {
    "default": BASE_URL + "2DFAN4-cd938726ad.zip",
    "1.6": BASE_URL + "2DFAN4_1.6-c827573f02.zip",
    "1.5": BASE_URL + "2DFAN4_1.5-a60332318a.zip",
}
DEFAULT_S3FD_URL = BASE_URL + "s3fd-619a316812.pth"


def is_installed() -> bool:
    """Whether ``face_alignment`` can be imported, without importing it (it pulls numba and more)."""
    if "face_alignment" in sys.modules:
        return sys.modules["face_alignment"] is not None
    try:
        return importlib.util.find_spec("face_alignment") is not None
    except (ImportError, ValueError):
        return False


def _torch_key(torch_version: str) -> str:
    # face_alignment keys its URL table by torch's "major.minor" ("2.13.0+cpu" -> "2.13"); the
    # same rule here means we check for the very file it will ask for.
    v = torch_version.split("+")[0]
    return v.rsplit(".", 2)[0] if "dev" in v else v.rsplit(".", 1)[0]


def fan_url(fa_module=None, torch_version: str | None = None) -> str:
    """The 2D-FAN URL ``face_alignment`` downloads for this torch version."""
    if torch_version is None:
        import torch  # lazy: torch, +1.4 s at CLI start-up (measured)

        torch_version = torch.__version__
    key = _torch_key(torch_version)
    api = getattr(fa_module, "api", None) if fa_module is not None else None
    table = getattr(api, "models_urls", None)
    default = getattr(api, "default_model_urls", None)
    if isinstance(table, dict) and isinstance(default, dict):
        return table.get(key, default)["2DFAN-4"]
    return DEFAULT_FAN_URLS.get(key, DEFAULT_FAN_URLS["default"])


def s3fd_url() -> str:
    """The S3FD URL ``face_alignment`` downloads (its own table when importable)."""
    try:
        mod = importlib.import_module("face_alignment.detection.sfd.sfd_detector")
        return mod.models_urls["s3fd"]
    except Exception:  # a fake or stripped package in tests, or a future layout
        return DEFAULT_S3FD_URL


def checkpoints_dir() -> Path:
    """Where ``face_alignment`` caches its downloads: ``torch.hub.get_dir()/checkpoints``."""
    import torch.hub  # lazy: torch (CLI start-up)

    return Path(torch.hub.get_dir()) / "checkpoints"


def required_files(fa_module=None, face_detector: str = "sfd") -> list[tuple[str, Path]]:
    """``(url, cached path)`` of every file ``face_alignment`` would download for 2D landmarks."""
    folder = checkpoints_dir()
    urls = [fan_url(fa_module)]
    if face_detector == "sfd":
        urls.append(s3fd_url())
    return [(u, folder / u.rsplit("/", 1)[-1]) for u in urls]


def check_weights(fa_module=None, face_detector: str = "sfd") -> None:
    """Raise :class:`WeightsMissingError` naming each missing file, its URL and the folder."""
    missing = [(u, p) for u, p in required_files(fa_module, face_detector) if not p.is_file()]
    if missing:
        files = ", ".join(f"{p.name} (from {u})" for u, p in missing)
        raise WeightsMissingError(
            f"face-alignment weights missing: download {files} and put them in {missing[0][1].parent}")


class FaceAlignmentDetector:
    """2D-FAN landmarks on S3FD face boxes (the paper's detector).

    Args:
        device: torch device for both networks (``"cpu"``, ``"cuda"``).
        face_detector: ``face_alignment``'s face detector module name; ``"sfd"`` (S3FD, the
            library's default) has its weights checked up front, others are left to the library.
        flip_input: also run the horizontally flipped image and average (slower, slightly better).
    """

    name = NAME
    has_iris = False

    def __init__(self, device: str = "cpu", face_detector: str = "sfd", flip_input: bool = False):
        try:
            import face_alignment  # optional dependency
        except ImportError:
            raise PluginError(f"landmarks '{NAME}' is unavailable: {INSTALL}") from None
        check_weights(face_alignment, face_detector)
        kinds = face_alignment.LandmarksType
        two_d = getattr(kinds, "TWO_D", None) or getattr(kinds, "_2D")  # renamed in face_alignment 1.4
        try:
            self._fa = face_alignment.FaceAlignment(two_d, device=device, face_detector=face_detector,
                                                    flip_input=flip_input)
        except OSError as exc:  # urllib's URLError is an OSError: a download the check did not foresee
            raise WeightsMissingError(
                f"face-alignment could not fetch its weights ({exc}); put the files in {checkpoints_dir()}"
            ) from None

    def reset(self) -> None:
        """Nothing to forget: every frame is detected on its own."""

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in one ``(H, W, 3) uint8 RGB`` frame, largest first; ``[]`` when there is none."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            desc = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise MediaError(f"detect() needs an (H, W, 3) uint8 RGB frame, got {desc}; "
                             "read images with headpuppet.media.imaging.read_image")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "No faces were detected." is an answer here, not a warning
            result = self._fa.get_landmarks_from_image(frame, return_bboxes=True)
        landmarks, _, boxes = result if isinstance(result, tuple) else (result, None, None)
        faces: list[Face] = []
        for i, pts in enumerate(landmarks or []):
            pts = np.asarray(pts, dtype=np.float32)[:, :2]  # (68, 2); drop z if a 3D model was used
            box, score = None, 1.0
            if boxes is not None and i < len(boxes) and boxes[i] is not None:
                b = np.asarray(boxes[i], dtype=np.float64).ravel()
                box = tuple(float(v) for v in b[:4])
                if b.size > 4:
                    score = float(b[4])
            faces.append(Face(points=pts, box=box, score=score))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces


@hookimpl
def register_landmark_detectors(register):
    if is_installed():
        register(NAME, FaceAlignmentDetector)
    else:
        register(NAME, FaceAlignmentDetector, unavailable=INSTALL)
