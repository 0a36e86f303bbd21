"""Landmark detector plugins on real faces: "mediapipe" (default) and "face-alignment" (optional extra)."""

from __future__ import annotations

import json
import sys
import types

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from headpuppet.cli import build_app
from headpuppet.errors import MediaError, PluginError, WeightsMissingError
from headpuppet.media.imaging import read_image
from headpuppet.plugins import make_plugin_manager, registry
from headpuppet.protocols import Face, LandmarkDetector
from headpuppet_plugins import face_alignment_detector as fa_plugin
from headpuppet.testing import shared_file, strip_ansi


@pytest.fixture(scope="module")
def photo_detector():
    det = registry(make_plugin_manager(), "landmarks").create("mediapipe", static_image_mode=True)
    yield det
    det.close()


def assert_plausible_face(face: Face, image_shape) -> None:
    """Anatomy checks that hold for any roughly frontal face, in image coordinates (y down)."""
    p = face.points
    assert p.shape == (68, 2) and p.dtype == np.float32 and np.isfinite(p).all()
    h, w = image_shape[:2]
    assert (p[:, 0] > -0.1 * w).all() and (p[:, 0] < 1.1 * w).all()
    right_eye, left_eye = p[36:42], p[42:48]
    # the subject's right eye is on the image's left
    assert right_eye[:, 0].max() < left_eye[:, 0].min()
    nose_tip, mouth = p[30], p[48:68]
    assert right_eye[:, 1].max() < nose_tip[1] and left_eye[:, 1].max() < nose_tip[1]
    assert max(right_eye[:, 1].max(), left_eye[:, 1].max()) < mouth[:, 1].min()
    assert p[31:36, 1].mean() < mouth[:, 1].min()  # nostrils above the lips
    assert p[17:27, 1].mean() < p[36:48, 1].mean()  # brows above the eyes
    assert p[27, 1] < p[28, 1] < p[29, 1] < p[30, 1]  # bridge runs down to the tip
    # the jaw spans the face: its ends lie outside the eyes, the chin below the mouth
    assert p[0, 0] < p[36, 0] and p[16, 0] > p[45, 0]
    assert p[8, 1] > mouth[:, 1].max()
    assert p[48, 0] < p[51, 0] < p[54, 0] and p[60, 0] < p[62, 0] < p[64, 0]
    assert p[51, 1] < p[57, 1] and p[62, 1] <= p[66, 1] + 1.0  # upper lip above the lower


def assert_irises_in_eyes(face: Face) -> None:
    assert face.iris is not None and face.iris.shape == (2, 3)
    for row, sl in zip(face.iris, (slice(36, 42), slice(42, 48))):
        cx, cy, r = (float(v) for v in row)
        contour = face.points[sl].reshape(-1, 1, 2)
        assert cv2.pointPolygonTest(contour, (cx, cy), False) >= 0, (row, face.points[sl])
        eye_width = np.ptp(face.points[sl, 0])
        assert 0.1 * eye_width < r < 0.6 * eye_width  # an iris is about 0.4 eye-widths across...


def test_is_registered_by_default_and_follows_the_protocol(photo_detector):
    pm = make_plugin_manager()
    assert registry(pm, "landmarks")["mediapipe"].distribution == "headpuppet"
    assert isinstance(photo_detector, LandmarkDetector)
    assert photo_detector.name == "mediapipe" and photo_detector.has_iris


def test_astronaut(photo_detector, astronaut):
    faces = photo_detector.detect(astronaut)
    assert len(faces) == 1
    assert_plausible_face(faces[0], astronaut.shape)
    assert_irises_in_eyes(faces[0])
    # the astronaut's face lies around x 170-280, y 60-180 of the 512 x 512 photo
    x0, y0, x1, y1 = faces[0].box
    assert 150 < x0 < x1 < 300 and 40 < y0 < y1 < 200


@pytest.mark.parametrize("name", ["photos/fr_obama.jpg", "photos/lp_s1.jpg", "photos/ani_aragaki.png"])
def test_shared_photos(photo_detector, name):
    image = read_image(shared_file(name))
    faces = photo_detector.detect(image)
    assert len(faces) >= 1
    assert_plausible_face(faces[0], image.shape)
    assert_irises_in_eyes(faces[0])


def _video_frames(path, n):
    from headpuppet.media.video import read_frames

    return list(read_frames(path, max_frames=n))


def test_video_tracking_and_reset(shared_video):
    frames = _video_frames(shared_video, 8)
    det = registry(make_plugin_manager(), "landmarks").create("mediapipe")  # tracking mode
    try:
        tracks = []
        for f in frames:
            faces = det.detect(f)
            assert len(faces) == 1
            assert_plausible_face(faces[0], f.shape)
            tracks.append(faces[0].points)
        tracks = np.stack(tracks)  # (T, 68, 2)
        iod = np.linalg.norm(tracks[:, 45] - tracks[:, 36], axis=1).mean()
        # consecutive frames of a talking head: landmarks move by a small part of the eye distance
        assert np.abs(np.diff(tracks, axis=0)).mean() < 0.1 * iod
        det.reset()
        again = det.detect(frames[0])
        assert len(again) == 1
        assert np.abs(again[0].points - tracks[0]).mean() < 0.1 * iod
    finally:
        det.close()


def test_reset_and_one_face_give_the_landmarks_of_a_fresh_detector(shared_video):
    """reset() starts a new run of the same graph: the landmarks a new detector gives. one_face(),
    which tracks one face without looking for more in every frame, finds the same landmarks on a
    video of one person, and detect_frames uses it after a block's first frame."""
    from headpuppet.media.detection import detect_frames

    frames = _video_frames(shared_video, 40)
    pm = make_plugin_manager()
    det = registry(pm, "landmarks").create("mediapipe")
    one = det.one_face()
    try:
        assert one.max_faces == 1 and det.max_faces > 1 and one.has_iris == det.has_iris

        def track(d):
            return np.stack([d.detect(f)[0].points for f in frames])

        first = track(det)
        det.reset()
        fresh = registry(pm, "landmarks").create("mediapipe")
        try:
            assert np.array_equal(track(det), first) and np.array_equal(track(fresh), first)
        finally:
            fresh.close()
        single = track(one)
        iod = np.linalg.norm(first[:, 45] - first[:, 36], axis=1).mean()
        assert np.abs(single - first).max() < 0.02 * iod


        class AllFaces:  # the same detector without one_face(): every frame looks for every face
            name, has_iris = det.name, det.has_iris
            detect, reset = det.detect, det.reset

        blocked = np.stack([face.points for _, face in detect_frames(frames, [det])])
        plain = np.stack([face.points for _, face in detect_frames(frames, [AllFaces()])])
        assert np.array_equal(blocked[0], plain[0])             # a block's first frame: the same detector
        assert np.abs(blocked - plain).max() < 0.002 * iod
    finally:
        det.close()
        one.close()


@pytest.mark.parametrize("kind", ["flat", "noise"])
def test_no_face_returns_empty_list(photo_detector, kind):
    rng = np.random.default_rng(0)
    image = np.full((240, 320, 3), 127, np.uint8) if kind == "flat" else \
        rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert photo_detector.detect(image) == []


def test_several_faces_largest_first(astronaut):
    face = astronaut[20:260, 110:350]  # (240, 240) head and shoulders
    big, small = cv2.resize(face, (300, 300)), cv2.resize(face, (170, 170))
    canvas = np.full((320, 560, 3), 200, np.uint8)
    canvas[10:310, 240:540] = big  # the larger face on the right
    canvas[75:245, 20:190] = small
    det = registry(make_plugin_manager(), "landmarks").create("mediapipe", static_image_mode=True)
    try:
        faces = det.detect(canvas)
        assert len(faces) == 2
        assert faces[0].area > faces[1].area
        assert faces[0].points[:, 0].mean() > 240 > faces[1].points[:, 0].mean()
    finally:
        det.close()
    one = registry(make_plugin_manager(), "landmarks").create("mediapipe", static_image_mode=True, max_faces=1)
    try:
        assert len(one.detect(canvas)) == 1
    finally:
        one.close()


def test_bad_frames_and_options_raise(photo_detector):
    with pytest.raises(MediaError):
        photo_detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(MediaError):
        photo_detector.detect(np.zeros((64, 64, 3), np.float32))
    factory = registry(make_plugin_manager(), "landmarks").get("mediapipe")
    with pytest.raises(ValueError):
        factory(max_faces=0)


def test_mesh_points_read_from_bytes_equal_the_attributes(shared_video):
    """mesh_points reads Face Mesh's landmarks from their serialised bytes; the protobuf attributes
    give the same pixels, and a list with another field set (visibility) takes the attribute path."""
    from mediapipe.framework.formats import landmark_pb2

    from headpuppet_plugins.mediapipe_detector import mesh_points, native_stderr_muted

    frame = _video_frames(shared_video, 1)[0]
    h, w = frame.shape[:2]
    det = registry(make_plugin_manager(), "landmarks").create("mediapipe", static_image_mode=True)
    try:
        with native_stderr_muted():
            lms = det._mesh.process(frame).multi_face_landmarks[0]
    finally:
        det.close()

    def attributes(landmarks):
        return np.array([(p.x * w, p.y * h, p.z * w) for p in landmarks.landmark], dtype=np.float64)

    assert len(lms.landmark) == 478
    assert np.array_equal(mesh_points(lms, w, h), attributes(lms))
    other = landmark_pb2.NormalizedLandmarkList()
    other.CopyFrom(lms)
    other.landmark[5].visibility = 0.5
    assert np.array_equal(mesh_points(other, w, h), attributes(other))
    assert mesh_points(landmark_pb2.NormalizedLandmarkList(), w, h).size == 0


def test_mediapipe_is_imported_without_matplotlib_which_stays_usable():
    """Making a detector imports mediapipe without the matplotlib its drawing helpers import (half
    its import time); afterwards ``import matplotlib.pyplot`` is the real module, and so is what the
    drawing helpers use."""
    import subprocess

    code = (
        "import sys\n"
        "from headpuppet.plugins import make_plugin_manager, registry\n"
        "det = registry(make_plugin_manager(), 'landmarks').create('mediapipe')\n"
        "print('matplotlib' in sys.modules, 'mediapipe' in sys.modules)\n"
        "from mediapipe.python.solutions import drawing_utils\n"
        "import matplotlib.pyplot as plt\n"
        "print(type(plt).__name__, drawing_utils.plt.figure is plt.figure)\n"
        "det.close()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "module", "True"], out.stdout + out.stderr[-2000:]


def test_mapping_uses_each_contour_in_order():
    from headpuppet_plugins.mediapipe_detector import MAPPING, mesh_iris, mesh_to_ibug

    # a mesh whose vertex i sits at (i, 2 i, 0): every iBUG point must be a convex combination of the
    # mesh vertices named for it, so its x lies between their smallest and largest index
    mesh = np.stack([np.arange(478.0), 2 * np.arange(478.0), np.zeros(478)], 1)
    pts = mesh_to_ibug(mesh)
    assert pts.shape == (68, 2)
    k = 0
    for path, fractions in MAPPING:
        for _ in fractions:
            assert min(path) - 1e-4 <= pts[k, 0] <= max(path) + 1e-4
            k += 1
    assert k == 68
    np.testing.assert_allclose(pts[:, 1], 2 * pts[:, 0], rtol=1e-5)
    assert mesh_iris(mesh[:468]) is None


# --- face-alignment (optional extra): never installed here; a fake package stands in -------------------


def test_face_alignment_listed_as_unavailable_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "face_alignment", None)  # `import face_alignment` now fails
    pm = make_plugin_manager()
    entry = registry(pm, "landmarks")["face-alignment"]
    assert entry.unavailable == "install it with: pip install 'headpuppet[face-alignment]'"
    with pytest.raises(PluginError, match=r"pip install 'headpuppet\[face-alignment\]'"):
        registry(pm, "landmarks").create("face-alignment")
    with pytest.raises(PluginError, match="install it"):
        fa_plugin.FaceAlignmentDetector()
    result = CliRunner().invoke(build_app(pm), ["plugins", "--json"])
    row = next(r for r in json.loads(result.output) if r["name"] == "face-alignment")
    assert row["kind"] == "landmarks" and row["available"] is False and "pip install" in row["unavailable"]


class _FakeFA:
    """Stands in for face_alignment.FaceAlignment: two faces, the small one first."""

    calls: list = []

    def __init__(self, landmarks_type, device="cuda", face_detector="sfd", flip_input=False, **kw):
        _FakeFA.calls.append((landmarks_type, device, face_detector, flip_input))
        self.empty = False

    def get_landmarks_from_image(self, image, detected_faces=None, return_bboxes=False, return_landmark_score=False):
        if self.empty or image.max() == 0:
            return None, None, None
        small = np.random.default_rng(0).uniform(10, 30, (68, 2)).astype(np.float32)
        big = np.random.default_rng(1).uniform(40, 120, (68, 3)).astype(np.float32)  # a 3D model's z is dropped
        boxes = [np.array([10, 10, 30, 30, 0.9]), np.array([40, 40, 120, 120, 0.99])]
        return [small, big], None, boxes


def _fake_face_alignment(monkeypatch, tmp_path, api=None):
    mod = types.ModuleType("face_alignment")
    mod.LandmarksType = types.SimpleNamespace(TWO_D=1, TWO_HALF_D=2, THREE_D=3)
    mod.FaceAlignment = _FakeFA
    if api is not None:
        mod.api = api
    monkeypatch.setitem(sys.modules, "face_alignment", mod)
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    _FakeFA.calls = []
    return tmp_path / "hub" / "checkpoints"


def test_face_alignment_missing_weights_names_files_and_folder(monkeypatch, tmp_path):
    folder = _fake_face_alignment(monkeypatch, tmp_path)
    pm = make_plugin_manager()
    assert registry(pm, "landmarks")["face-alignment"].unavailable is None
    with pytest.raises(WeightsMissingError) as err:
        registry(pm, "landmarks").create("face-alignment")
    msg = str(err.value)
    assert "\n" not in msg
    assert "2DFAN4-cd938726ad.zip" in msg and "s3fd-619a316812.pth" in msg and str(folder) in msg
    assert "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip" in msg
    assert _FakeFA.calls == []  # it never got as far as asking face_alignment to download

    # only the detector file missing: the message names just that one
    folder.mkdir(parents=True)
    (folder / "2DFAN4-cd938726ad.zip").write_bytes(b"x")
    with pytest.raises(WeightsMissingError) as err:
        fa_plugin.FaceAlignmentDetector()
    assert "s3fd-619a316812.pth" in str(err.value) and "2DFAN4" not in str(err.value)


def test_face_alignment_with_weights_detects_largest_first(monkeypatch, tmp_path):
    folder = _fake_face_alignment(monkeypatch, tmp_path)
    folder.mkdir(parents=True)
    for name in ("2DFAN4-cd938726ad.zip", "s3fd-619a316812.pth"):
        (folder / name).write_bytes(b"x")
    det = registry(make_plugin_manager(), "landmarks").create("face-alignment", device="cpu")
    assert _FakeFA.calls == [(1, "cpu", "sfd", False)]  # TWO_D landmarks on the requested device
    assert isinstance(det, LandmarkDetector) and det.has_iris is False
    faces = det.detect(np.full((128, 128, 3), 100, np.uint8))
    assert [f.points.shape for f in faces] == [(68, 2), (68, 2)]
    assert faces[0].box == (40.0, 40.0, 120.0, 120.0) and faces[0].score == pytest.approx(0.99)
    assert faces[0].area > faces[1].area and faces[0].iris is None
    assert det.detect(np.zeros((64, 64, 3), np.uint8)) == []
    det.reset()


def test_face_alignment_checks_the_file_its_own_url_table_names(monkeypatch, tmp_path):
    api = types.SimpleNamespace(
        default_model_urls={"2DFAN-4": "https://example.org/2DFAN4-default.zip"},
        models_urls={"1.6": {"2DFAN-4": "https://example.org/2DFAN4_1.6-abc.zip"}},
    )
    folder = _fake_face_alignment(monkeypatch, tmp_path, api=api)
    mod = sys.modules["face_alignment"]
    assert fa_plugin.fan_url(mod, "1.6.0+cu101") == "https://example.org/2DFAN4_1.6-abc.zip"
    assert fa_plugin.fan_url(mod, "2.13.0+cpu") == "https://example.org/2DFAN4-default.zip"
    assert fa_plugin.fan_url(None, "1.5.1") == fa_plugin.BASE_URL + "2DFAN4_1.5-a60332318a.zip"
    with pytest.raises(WeightsMissingError, match="2DFAN4-default.zip"):
        fa_plugin.FaceAlignmentDetector()
    assert [p for _, p in fa_plugin.required_files(mod)][0] == folder / "2DFAN4-default.zip"


def test_face_alignment_listed_as_available_with_the_package(monkeypatch, tmp_path):
    _fake_face_alignment(monkeypatch, tmp_path)
    result = CliRunner().invoke(build_app(make_plugin_manager()), ["plugins", "--json"])
    assert result.exit_code == 0, strip_ansi(result.output)
    row = next(r for r in json.loads(result.output) if r["name"] == "face-alignment")
    assert row["available"] is True and row["distribution"] == "headpuppet"


def test_native_stderr_is_muted_unless_asked_for(capfd, monkeypatch):
    """MediaPipe's C++ writes to file descriptor 2 directly; the detector mutes it around its calls
    (-vv, i.e. HEADPUPPET_NATIVE_LOGS=1, shows it) and always restores it."""
    import os

    from headpuppet_plugins.mediapipe_detector import native_stderr_muted

    monkeypatch.delenv("HEADPUPPET_NATIVE_LOGS", raising=False)
    with native_stderr_muted():
        os.write(2, b"native chatter\n")
    os.write(2, b"ours\n")
    err = capfd.readouterr().err
    assert "native chatter" not in err and "ours" in err
    monkeypatch.setenv("HEADPUPPET_NATIVE_LOGS", "1")
    with native_stderr_muted():
        os.write(2, b"native chatter\n")
    assert "native chatter" in capfd.readouterr().err


def test_native_stderr_mute_nests_across_threads(capfd, monkeypatch):
    """Detectors on several threads (preprocess --workers on one video) mute and unmute in any
    order: fd 2 stays muted while any of them is inside, and is restored after the last leaves."""
    import os
    import threading

    from headpuppet_plugins.mediapipe_detector import native_stderr_muted

    monkeypatch.delenv("HEADPUPPET_NATIVE_LOGS", raising=False)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def a():
        with native_stderr_muted():
            a_in.set()
            b_in.wait(5)
        a_out.set()

    def b():
        a_in.wait(5)
        with native_stderr_muted():
            b_in.set()
            a_out.wait(5)  # A has left first: B still needs the mute
            os.write(2, b"native chatter\n")

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    os.write(2, b"ours\n")
    err = capfd.readouterr().err
    assert "native chatter" not in err and "ours" in err


def _along(path: np.ndarray, fractions) -> np.ndarray:
    """The mapping's definition, one contour at a time: points at ``fractions`` of the 3D arc length
    of ``path`` (P, 3), as (F, 2) x, y; a degenerate contour (all points equal) gives its first point."""
    if len(path) == 1:
        return np.repeat(path[:, :2], len(fractions), axis=0)
    cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])
    if cum[-1] <= 0:
        return np.repeat(path[:1, :2], len(fractions), axis=0)
    t = np.asarray(fractions) * cum[-1]
    return np.stack([np.interp(t, cum, path[:, 0]), np.interp(t, cum, path[:, 1])], axis=1)


def test_vectorised_mapping_equals_the_per_contour_definition():
    from headpuppet_plugins.mediapipe_detector import MAPPING, mesh_to_ibug

    rng = np.random.default_rng(0)
    for mesh in [rng.normal(size=(478, 3)) * 100 for _ in range(20)] + [np.zeros((478, 3))]:
        ref = np.concatenate([_along(mesh[list(path)], fr) for path, fr in MAPPING]).astype(np.float32)
        np.testing.assert_allclose(mesh_to_ibug(mesh), ref, atol=1e-4)
