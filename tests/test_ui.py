"""The web UI's functions (``headpuppet ui``): called directly, and through Gradio's own client
against the page served on 127.0.0.1 (uploads, landmark previews, a run with the driver's audio, and
bad uploads answered with one readable line). Skips where the ``ui`` extra (gradio) is absent."""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pytest
import torch

from headpuppet.testing import make_checkpoint, make_pm, mediapipe_or_skip, shared_file

pytest.importorskip("gradio", reason="the ui extra is not installed (pip install -e '.[ui]')")
# gradio's own use of pandas, not ours
pytestmark = [pytest.mark.filterwarnings("ignore:.*copy keyword is deprecated"),
              pytest.mark.filterwarnings("ignore:.*no_silent_downcasting")]

PHOTO = "photos/fr_obama.jpg"
DRIVER = "videos/lp_d1.mp4"          # 0.5 s, 13 frames, with audio


def _ffmpeg(*args) -> None:
    from headpuppet.media.video import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", *map(str, args)], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from headpuppet.media.imaging import write_image

    root = tmp_path_factory.mktemp("media")
    blank = root / "blank.png"
    write_image(blank, np.full((120, 160, 3), 128, np.uint8))
    text = root / "notes.mp4"
    text.write_bytes(b"not a video\n" * 100)
    long = root / "long.mp4"      # 3 s of a face: too long for a page started with max_seconds=2
    _ffmpeg("-i", shared_file("videos/dtk_m030_neutral.mp4"), "-t", 3, "-c:v", "libx264", "-pix_fmt", "yuv420p", long)
    return {"blank": blank, "text": text, "long": long, "photo": shared_file(PHOTO), "driver": shared_file(DRIVER)}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    from headpuppet.ui import UiConfig

    torch.set_num_threads(1)
    pm = make_pm()
    mediapipe_or_skip(pm)
    ckpt = make_checkpoint(tmp_path_factory.mktemp("ckpt"))
    people = tmp_path_factory.mktemp("people")
    return UiConfig(checkpoints=[ckpt], people_dirs=[people], max_seconds=2.0,
                    out_dir=tmp_path_factory.mktemp("out"), pm=pm)


# ---------------------------------------------------------------------- the functions
def test_models(cfg, tmp_path):
    models = cfg.models()
    assert models[0][0].startswith("default model") and models[-1][1] == str(cfg.checkpoints[0])


def test_inspect_source_shows_face_and_landmarks(cfg, media):
    from headpuppet.ui import PREVIEW_SIZE, inspect_source

    img, msg = inspect_source(cfg, [str(media["photo"])])
    assert img.shape == (PREVIEW_SIZE, PREVIEW_SIZE, 3) and "a face in each" in msg
    img, msg = inspect_source(cfg, [str(media["photo"]), str(media["blank"])])
    assert img.shape[1] > 2 * PREVIEW_SIZE
    assert "no face in 1 of 2" in msg and "blank.png" in msg
    img, msg = inspect_source(cfg, None)
    assert img is None and "Upload a photo" in msg


def test_inspect_driver(cfg, media):
    from headpuppet.ui import inspect_driver

    img, msg = inspect_driver(cfg, str(media["driver"]))
    assert img is not None and "sampled frames" in msg and "with audio" in msg
    img, msg = inspect_driver(cfg, str(media["text"]))
    assert img is None and "not a readable video" in msg and "Traceback" not in msg
    img, msg = inspect_driver(cfg, str(media["long"]))
    assert img is None and "3 s long" in msg and "up to 2 s" in msg


def test_run_animation_reports_progress(cfg, media):
    from headpuppet.ui import run_animation
    from headpuppet.media.video import probe

    seen = []
    path, summary = run_animation(cfg, [str(media["photo"])], None, str(media["driver"]), "relative", 1.0, 0,
                                  True, False, str(cfg.checkpoints[0]), progress=lambda f, d: seen.append((f, d)))
    info = probe(path)
    assert info.num_frames == probe(media["driver"]).num_frames and info.has_audio
    assert info.width == 2 * info.height                       # side by side
    assert "done" in summary and "with the driver's audio" in summary
    assert any(d.startswith("driver landmarks") for _, d in seen) and any(d.startswith("rendering") for _, d in seen)
    assert max(f for f, _ in seen) == 1.0


def test_fine_tuned_person_folder(cfg, media):
    """A person folder in --people is offered, previewed from its own shots and animated."""
    from headpuppet.fewshot.session import load_person
    from headpuppet.ui import inspect_source, run_animation
    from headpuppet.media.video import probe

    lo = load_person([media["photo"]], checkpoint=cfg.checkpoints[0], pm=cfg.pm)
    folder = lo.animator.save_person(lo.person, cfg.people_dirs[0] / "obama")
    assert [v for _, v in cfg.people()] == [str(folder)]
    img, msg = inspect_source(cfg, None, str(folder))
    assert img is not None and "fine-tuned person obama" in msg
    path, summary = run_animation(cfg, None, str(folder), str(media["driver"]))
    assert probe(path).num_frames == probe(media["driver"]).num_frames and path.endswith("obama_lp_d1.mp4")


def test_webcam_frames(cfg, media):
    from headpuppet.ui import webcam_frame
    from headpuppet.media.video import read_frames

    session = None
    for frame in read_frames(media["driver"], max_frames=4):
        out, session, status = webcam_frame(cfg, frame, [str(media["photo"])], None, "relative", 1.0,
                                            str(cfg.checkpoints[0]), session)
        assert out.ndim == 3 and out.dtype == np.uint8
    first = session
    out, session, status = webcam_frame(cfg, frame, [str(media["photo"])], None, "absolute", 1.0,
                                        str(cfg.checkpoints[0]), session)
    assert session is not first                                  # options changed: a new session
    assert "ms per frame" in status


def test_progress_reporter():
    from headpuppet.ui import ProgressReporter

    calls = []
    rep = ProgressReporter(lambda f, d: calls.append((round(f, 2), d)), {"frames": "rendering frames"})
    with rep.task("frames", total=4) as t:
        for _ in range(4):
            t.advance(1)
    assert calls[0] == (0.0, "rendering frames 0/4") and calls[-1] == (1.0, "rendering frames 4/4")


# ---------------------------------------------------------------------- through Gradio's client
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def client(cfg):
    from gradio_client import Client

    from headpuppet.ui import launch

    demo, url = launch(cfg, port=_free_port(), block=False, quiet=True)
    assert url.startswith("http://127.0.0.1:")
    yield Client(url, verbose=False)
    demo.close()


def test_client_inspect_and_animate(client, cfg, media):
    from gradio_client import handle_file

    from headpuppet.media.video import probe

    img, msg = client.predict(files=[handle_file(media["photo"])], api_name="/inspect_source")
    assert img.endswith(".png") and "a face in each" in msg
    img, msg = client.predict(video=handle_file(media["driver"]), api_name="/inspect_driver")
    assert img.endswith(".png") and "with audio" in msg
    video, summary = client.predict(files=[handle_file(media["photo"])], video=handle_file(media["driver"]),
                                    motion="absolute", smooth=0, paste=True, model=str(cfg.checkpoints[0]),
                                    api_name="/animate")
    info = probe(video)
    assert info.num_frames == probe(media["driver"]).num_frames and info.has_audio
    assert "done" in summary


def test_client_bad_uploads_are_readable(client, cfg, media):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    cases = [
        ({"files": [handle_file(media["blank"])], "video": handle_file(media["driver"])}, "no face found in the source"),
        ({"files": [handle_file(media["photo"])], "video": handle_file(media["text"])}, "not a readable video"),
        ({"files": [handle_file(media["photo"])], "video": handle_file(media["long"])}, "takes up to 2 s"),
        ({"files": [], "video": handle_file(media["driver"])}, "upload a photo"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(AppError) as exc:
            client.predict(**kwargs, model=str(cfg.checkpoints[0]), api_name="/animate")
        text = str(exc.value)
        assert expected in text and "Traceback" not in text, text
    _, msg = client.predict(video=handle_file(media["text"]), api_name="/inspect_driver")
    assert "not a readable video" in msg


def test_ui_command_without_gradio_says_how_to_install(monkeypatch):
    import builtins

    from headpuppet.errors import HeadpuppetError
    from headpuppet.ui import require_gradio

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "gradio":
            raise ImportError("no gradio")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(HeadpuppetError, match=r'pip install -e "\.\[ui\]"'):
        require_gradio()
