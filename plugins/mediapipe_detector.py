"""Landmark detector "mediapipe" (the default): MediaPipe Face Mesh mapped to the 68 iBUG points.

The paper (Zakharov et al. 2019, Sec. 4) extracts landmarks with the face alignment network of
Bulat & Tzimiropoulos (plugin "face-alignment"). This default runs anywhere without extra
downloads: ``mediapipe.python.solutions.face_mesh.FaceMesh`` (mediapipe 0.10.21 ships its model)
with ``refine_landmarks=True`` gives 478 3D points per face, 468-477 being the two irises. Those
are mapped to the 68-point order of :mod:`headpuppet.media.landmarks` as described below.

Mapping (mesh indices; "right" is the subject's right = the image's left)
-------------------------------------------------------------------------
Most iBUG points have no single mesh vertex: the 300-W annotation places them at equal steps
along a contour (jaw, eyelids, lip halves) between anatomical anchors (eye and mouth corners,
chin, lip peaks). So each iBUG point is either a mesh vertex or a fraction of the arc length along
a mesh contour between two anchors. Arc length is measured on the 3D mesh (x, y in pixels, z in
the same scale), which keeps the spacing stable when the head turns.

====================  ==============================================================  ==========
iBUG points           mesh contour (anchor ... anchor)                                fractions
====================  ==============================================================  ==========
0-8   jaw, right      127 234 93 132 58 172 136 150 149 176 148 152 (ear level->chin)  k/8, k<=8
9-16  jaw, left       152 377 400 378 379 365 397 288 361 323 454 356 (chin->ear level) k/8, k>0
17    right brow tip  mean of 70 (upper edge) and 46 (lower edge)
18-20 right brow      63, 105, 66 (upper edge of the brow, as 300-W marks it)
21    right brow head mean of 107 and 55
22    left brow head  mean of 336 and 285
23-25 left brow       296, 334, 293
26    left brow tip   mean of 300 and 276
27-30 nose bridge     168 6 197 195 5 4 1 (nasion -> tip)                              0 1/3 2/3 1
31-33 nostrils, right 98 97 2 (alar base -> subnasale)                                 0 1/2 1
34-35 nostrils, left  2 326 327                                                        1/2 1
36-39 right eye, top  33 246 161 160 159 158 157 173 133 (outer -> inner corner)       0 1/3 2/3 1
40-41 right eye, low  133 155 154 153 145 144 163 7 33 (inner -> outer)                1/3 2/3
42-45 left eye, top   362 398 384 385 386 387 388 466 263 (inner -> outer corner)      0 1/3 2/3 1
46-47 left eye, low   263 249 390 373 374 380 381 382 362 (outer -> inner)             1/3 2/3
48-50 outer lip, top  61 185 40 39 37 (corner -> right peak)                           0 1/2 1
51    upper lip mid   0
52-54 outer lip, top  267 269 270 409 291 (left peak -> corner)                        0 1/2 1
55-57 outer lip, low  291 375 321 405 314 17 (corner -> bottom centre)                 1/3 2/3 1
58-59 outer lip, low  17 84 181 91 146 61 (bottom centre -> corner)                    1/3 2/3
60-62 inner lip, top  78 191 80 81 82 13 (corner -> centre)                            0 1/2 1
63-64 inner lip, top  13 312 311 310 415 308 (centre -> corner)                        1/2 1
65-66 inner lip, low  308 324 318 402 317 14                                           1/2 1
67    inner lip, low  14 87 178 88 95 78                                               1/2
====================  ==============================================================  ==========

Irises: mesh 468 is the centre of the subject's right iris (the eye around 33/133, on the image's
left; MediaPipe names it from the subject's side too) with boundary points 469-472; 473 is the
left iris centre with boundary 474-477. ``Face.iris`` rows are ``(cx, cy, r)``, right eye first, r the
mean 2D distance of the four boundary points to the centre.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
import types

import numpy as np

from headpuppet import hookimpl
from headpuppet.errors import MediaError
from headpuppet.nativelog import stderr_to_devnull
from headpuppet.protocols import Face

NAME = "mediapipe"
NUM_MESH = 478

# (mesh contour, fractions of its 3D arc length) in iBUG order; each fraction yields one iBUG point.
_JAW_R = (127, 234, 93, 132, 58, 172, 136, 150, 149, 176, 148, 152)
_JAW_L = (152, 377, 400, 378, 379, 365, 397, 288, 361, 323, 454, 356)
_NOSE = (168, 6, 197, 195, 5, 4, 1)
_R_EYE_TOP = (33, 246, 161, 160, 159, 158, 157, 173, 133)
_R_EYE_LOW = (133, 155, 154, 153, 145, 144, 163, 7, 33)
_L_EYE_TOP = (362, 398, 384, 385, 386, 387, 388, 466, 263)
_L_EYE_LOW = (263, 249, 390, 373, 374, 380, 381, 382, 362)
_THIRDS = (1 / 3, 2 / 3)

MAPPING: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = (
    (_JAW_R, tuple(k / 8 for k in range(9))),          # 0-8
    (_JAW_L, tuple(k / 8 for k in range(1, 9))),       # 9-16
    ((70, 46), (0.5,)),                                # 17: brow tip = mean of its edges
    ((63,), (0.0,)), ((105,), (0.0,)), ((66,), (0.0,)),  # 18-20
    ((107, 55), (0.5,)),                               # 21
    ((336, 285), (0.5,)),                              # 22
    ((296,), (0.0,)), ((334,), (0.0,)), ((293,), (0.0,)),  # 23-25
    ((300, 276), (0.5,)),                              # 26
    (_NOSE, (0.0, 1 / 3, 2 / 3, 1.0)),                 # 27-30
    ((98, 97, 2), (0.0, 0.5, 1.0)),                    # 31-33
    ((2, 326, 327), (0.5, 1.0)),                       # 34-35
    (_R_EYE_TOP, (0.0, 1 / 3, 2 / 3, 1.0)),            # 36-39
    (_R_EYE_LOW, _THIRDS),                             # 40-41
    (_L_EYE_TOP, (0.0, 1 / 3, 2 / 3, 1.0)),            # 42-45
    (_L_EYE_LOW, _THIRDS),                             # 46-47
    ((61, 185, 40, 39, 37), (0.0, 0.5, 1.0)),          # 48-50
    ((0,), (0.0,)),                                    # 51
    ((267, 269, 270, 409, 291), (0.0, 0.5, 1.0)),      # 52-54
    ((291, 375, 321, 405, 314, 17), (1 / 3, 2 / 3, 1.0)),  # 55-57
    ((17, 84, 181, 91, 146, 61), _THIRDS),             # 58-59
    ((78, 191, 80, 81, 82, 13), (0.0, 0.5, 1.0)),      # 60-62
    ((13, 312, 311, 310, 415, 308), (0.5, 1.0)),       # 63-64
    ((308, 324, 318, 402, 317, 14), (0.5, 1.0)),       # 65-66
    ((14, 87, 178, 88, 95, 78), (0.5,)),               # 67
)
assert sum(len(f) for _, f in MAPPING) == 68

#: (centre, boundary points) of the right then the left iris
IRIS = ((468, (469, 470, 471, 472)), (473, (474, 475, 476, 477)))


def _mapping_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:data:`MAPPING` as arrays: contours ``(R, P)`` (shorter ones padded with their last vertex, a
    zero-length tail), and per iBUG point its contour row ``(68,)`` and fraction ``(68,)``."""
    longest = max(len(path) for path, _ in MAPPING)
    contours = np.array([list(path) + [path[-1]] * (longest - len(path)) for path, _ in MAPPING], dtype=np.intp)
    rows = np.array([r for r, (_, fr) in enumerate(MAPPING) for _ in fr], dtype=np.intp)
    fractions = np.array([f for _, fr in MAPPING for f in fr], dtype=np.float64)
    return contours, rows, fractions


_CONTOURS, _ROWS, _FRACTIONS = _mapping_arrays()


def mesh_to_ibug(mesh: np.ndarray) -> np.ndarray:
    """``(478, 3)`` mesh points (x, y px, z in x's scale) -> ``(68, 2) float32`` iBUG points (x, y).

    Each point is the fraction of its contour's 3D arc length that :data:`MAPPING` gives, interpolated
    between mesh vertices; all 68 at once, since this runs per frame (a test checks it against a
    per-contour definition)."""
    mesh = np.asarray(mesh, dtype=np.float64)
    if mesh.ndim != 2 or mesh.shape[0] < 468 or mesh.shape[1] != 3:
        raise ValueError(f"expected (478, 3) face-mesh points, got {mesh.shape}")
    path = mesh[_CONTOURS]  # (R, P, 3)
    seg = np.linalg.norm(np.diff(path, axis=1), axis=2)  # (R, P-1)
    cum = np.concatenate([np.zeros((len(path), 1)), np.cumsum(seg, axis=1)], axis=1)  # (R, P)
    c = cum[_ROWS]  # (68, P)
    t = _FRACTIONS * c[:, -1]  # (68,) arc length of each point along its contour
    j = np.minimum((c[:, 1:] < t[:, None]).sum(axis=1), c.shape[1] - 2)  # its segment
    k = np.arange(len(t))
    span = c[k, j + 1] - c[k, j]
    w = np.divide(t - c[k, j], span, out=np.zeros_like(t), where=span > 0)[:, None]
    a, b = path[_ROWS, j, :2], path[_ROWS, j + 1, :2]
    return (a + w * (b - a)).astype(np.float32)


def mesh_iris(mesh: np.ndarray) -> np.ndarray | None:
    """``(478, 3)`` mesh -> ``(2, 3) float32`` rows ``(cx, cy, r)`` right eye first; None without irises."""
    if mesh.shape[0] < NUM_MESH:
        return None
    rows = []
    for centre, ring in IRIS:
        c = mesh[centre, :2]
        r = np.linalg.norm(mesh[list(ring), :2] - c, axis=1).mean()
        rows.append((c[0], c[1], r))
    return np.asarray(rows, dtype=np.float32)


#: what :meth:`MediaPipeDetector.reset` shows the graph to make it forget the faces it tracks
_FLUSH_FRAME = np.zeros((32, 32, 3), np.uint8)
#: a serialised NormalizedLandmark holding x, y, z only: its bytes, and where the tags of its
#: message (field 1 of the list, 15 bytes long) and of x, y, z (fields 1-3, 32-bit floats) sit
_LANDMARK_BYTES = 17
_TAG_AT = np.array([0, 1, 2, 7, 12])
_TAGS = np.array([0x0A, 0x0F, 0x0D, 0x15, 0x1D], np.uint8)
_FLOAT_AT = np.array([3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16])


def mesh_points(landmarks, w: int, h: int) -> np.ndarray:
    """A ``NormalizedLandmarkList`` -> ``(N, 3) float64`` pixels (x * w, y * h, z * w: z shares x's
    scale, MediaPipe's convention).

    Read from the list's serialised bytes in one go (0.01 against 0.27 ms for 478 points through the
    protobuf attributes, per frame); where the bytes are not the plain x, y, z layout (another
    field set, another protobuf), through the attributes. Both give the same numbers (tested)."""
    n = len(landmarks.landmark)
    raw = np.frombuffer(landmarks.SerializeToString(), np.uint8)
    if n and raw.size == n * _LANDMARK_BYTES:
        rec = raw.reshape(n, _LANDMARK_BYTES)
        if (rec[:, _TAG_AT] == _TAGS).all():
            xyz = np.ascontiguousarray(rec[:, _FLOAT_AT]).view("<f4").astype(np.float64)
            return xyz * np.array([w, h, w], np.float64)
    return np.array([(p.x * w, p.y * h, p.z * w) for p in landmarks.landmark], dtype=np.float64)


class MediaPipeDetector:
    """MediaPipe Face Mesh -> 68 iBUG points and irises.

    Args:
        static_image_mode: True runs face detection on every frame (photos, unrelated frames);
            False (default) tracks faces from frame to frame, which is faster and steadier on video.
        max_faces: how many faces to look for (several, so callers can pick the largest).
        min_confidence: minimum face-detection (and tracking) confidence in ``[0, 1]``.
        refine_landmarks: run the attention model that adds the irises (needed for ``has_iris``).
    """

    name = NAME

    def __init__(self, static_image_mode: bool = False, max_faces: int = 4, min_confidence: float = 0.5,
                 refine_landmarks: bool = True):
        if max_faces < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        self.static_image_mode = bool(static_image_mode)
        self.max_faces = int(max_faces)
        self.min_confidence = float(min_confidence)
        self.refine_landmarks = bool(refine_landmarks)
        self.has_iris = self.refine_landmarks
        self._mesh = None
        self._open()

    def _open(self) -> None:
        # Imported here so `headpuppet plugins` and `--help` never pay for loading mediapipe; and
        # imported muted, since its native loggers keep the stderr they find at import time.
        with native_stderr_muted(), _deferred("matplotlib", "matplotlib.pyplot"):
            from mediapipe.python.solutions import face_mesh

            self._mesh = face_mesh.FaceMesh(
                static_image_mode=self.static_image_mode,
                max_num_faces=self.max_faces,
                refine_landmarks=self.refine_landmarks,
                min_detection_confidence=self.min_confidence,
                min_tracking_confidence=self.min_confidence,
            )
        self._tracking = False  # whether a frame went through the graph since it started or was reset

    def reset(self) -> None:
        """Forget the faces tracked so far (call before each new video or block of frames).

        Face Mesh's only state from frame to frame is the face regions it tracks, taken from the
        last frame's landmarks. A small black frame (no face in it) empties them, so the next frame
        looks for faces anew: the same landmarks as after restarting the graph (a test checks it),
        in a quarter of the time (3 against 12 ms here). Without tracking (``static_image_mode``)
        there is nothing to forget."""
        if self._mesh is None:
            self._open()
            return
        if self.static_image_mode or not self._tracking:
            return
        with native_stderr_muted():
            result = self._mesh.process(_FLUSH_FRAME)
            if result.multi_face_landmarks:  # a face in a black frame: never seen, but restart then
                self._mesh.reset()
        self._tracking = False

    def one_face(self) -> "MediaPipeDetector":
        """A detector like this one that looks for one face only. With ``max_faces`` above 1, Face
        Mesh runs its face detector on every frame while it tracks fewer faces than that; with 1,
        only until it has the face, then it tracks it (about 5 against 8 ms a frame here)."""
        return MediaPipeDetector(static_image_mode=self.static_image_mode, max_faces=1,
                                 min_confidence=self.min_confidence, refine_landmarks=self.refine_landmarks)

    def close(self) -> None:
        if self._mesh is not None:
            with native_stderr_muted():
                self._mesh.close()
            self._mesh = None

    def __enter__(self) -> "MediaPipeDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, frame: np.ndarray) -> list[Face]:
        """Faces in one ``(H, W, 3) uint8 RGB`` frame, largest first; ``[]`` when there is none."""
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            desc = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise MediaError(f"detect() needs an (H, W, 3) uint8 RGB frame, got {desc}; "
                             "read images with headpuppet.media.imaging.read_image")
        if self._mesh is None:
            self._open()
        h, w = frame.shape[:2]
        with native_stderr_muted():
            result = self._mesh.process(np.ascontiguousarray(frame))
        self._tracking = True
        faces: list[Face] = []
        for lms in result.multi_face_landmarks or []:
            mesh = mesh_points(lms, w, h)
            faces.append(Face(points=mesh_to_ibug(mesh), iris=mesh_iris(mesh) if self.has_iris else None))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces


class _Deferred(types.ModuleType):
    """Stands in for a module while mediapipe is imported (:func:`_deferred`); afterwards its
    attributes are the real module's, imported on first use."""

    def __getattr__(self, attr: str):
        if attr.startswith("__") or sys.modules.get(self.__name__) is self:
            raise AttributeError(attr)
        return getattr(importlib.import_module(self.__name__), attr)


@contextlib.contextmanager
def _deferred(*names: str):
    """Import mediapipe without the modules ``names`` that it imports and Face Mesh never uses.

    mediapipe's package imports every solution, among them its drawing helpers, which import
    ``matplotlib.pyplot``: 0.36 s of its 0.73 s import here, on every command that finds
    landmarks. While this block runs, a stand-in sits in ``sys.modules`` for each of ``names`` not
    imported yet; after it, the stand-ins are gone from ``sys.modules`` (a later ``import`` gets the
    real module), and the one the drawing helpers keep imports the real module when it is used.
    (Another thread that imports matplotlib for the first time during those 0.4 s would get the
    stand-in; an application that uses matplotlib beside headpuppet's detectors imports it first.)"""
    stubs = {name: _Deferred(name) for name in names if name not in sys.modules}
    for name, stub in stubs.items():
        sys.modules[name] = stub
        parent, _, child = name.rpartition(".")
        if parent in stubs:
            setattr(stubs[parent], child, stub)
    try:
        yield
    finally:
        for name, stub in stubs.items():
            if sys.modules.get(name) is stub:
                del sys.modules[name]


_MUTE_LOCK = threading.Lock()
_MUTE: dict[str, int | None] = {"depth": 0, "saved": None}


@contextlib.contextmanager
def native_stderr_muted():
    """Mute file descriptor 2 while MediaPipe's C++ loads and runs: absl, TFLite and its calculators
    write their start-up chatter ("Feedback manager requires...", "Created TensorFlow Lite XNNPACK
    delegate") there directly, past Python's logging, about a thousand lines in one ``evaluate``.
    The native loggers keep the descriptor they find when mediapipe is imported, so the import must
    happen in here too. Shown with ``-vv`` (which sets ``HEADPUPPET_NATIVE_LOGS=1``, inherited by
    worker processes) or that variable.

    Safe with several threads (``preprocess --workers``' detectors): the first to enter mutes, the
    last to leave restores the descriptor."""
    if os.environ.get("HEADPUPPET_NATIVE_LOGS") or logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    with _MUTE_LOCK:
        if _MUTE["depth"] == 0:
            _MUTE["saved"] = stderr_to_devnull()  # None: no usable fd 2, nothing to mute
        _MUTE["depth"] += 1
    try:
        yield
    finally:
        with _MUTE_LOCK:
            _MUTE["depth"] -= 1
            if _MUTE["depth"] == 0 and _MUTE["saved"] is not None:
                os.dup2(_MUTE["saved"], 2)
                os.close(_MUTE["saved"])
                _MUTE["saved"] = None


@hookimpl
def register_landmark_detectors(register):
    register(NAME, MediaPipeDetector)
