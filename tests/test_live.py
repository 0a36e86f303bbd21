"""Live driving (``headpuppet live``, ``animate`` with a stream DRIVER): what counts as a stream, the
causal smoother, the per-frame pipeline on real faces, and generated streams piped in through stdin,
a named pipe and ``--realtime``, out to a file and to stdout (read back by another ffmpeg)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

from headpuppet.testing import make_checkpoint, make_pm, mediapipe_or_skip, shared_file

PHOTO = "photos/fr_obama.jpg"
VIDEO = "videos/dtk_m030_neutral.mp4"     # 256x256, 25 fps, 94 frames
N = 20


def ffmpeg() -> str:
    from headpuppet.media.video import ffmpeg_exe

    return ffmpeg_exe()


def frame_count(path) -> int:
    from headpuppet.media.video import probe

    return probe(path).num_frames


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def loaded(ckpt):
    from headpuppet.fewshot.session import load_person

    torch.set_num_threads(1)
    pm = make_pm()
    mediapipe_or_skip(pm)
    return load_person([shared_file(PHOTO)], checkpoint=ckpt, pm=pm)


@pytest.fixture(scope="module")
def frames():
    from headpuppet.media.video import read_frames

    return [f.copy() for f in read_frames(shared_file(VIDEO), max_frames=N)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _live_cmd(ckpt, *args):
    return [sys.executable, "-m", "headpuppet", "live", str(shared_file(PHOTO)), *map(str, args),
            "--checkpoint", str(ckpt)]


# ---------------------------------------------------------------------- what is a stream
def test_is_stream(tmp_path):
    from headpuppet.live import input_args, is_realtime, is_stream

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    for spec in ("-", "0", "/dev/video0", "rtsp://cam.local/stream", "udp://127.0.0.1:5000", "pipe:0", fifo):
        assert is_stream(spec), spec
    for spec in (video, tmp_path, "driver.mp4", "frames/"):
        assert not is_stream(spec), spec
    assert is_realtime("udp://127.0.0.1:5000") and is_realtime("/dev/video0")
    assert not is_realtime("-") and not is_realtime(fifo)
    assert input_args("-")[-2:] == ["-i", "pipe:0"]
    if sys.platform.startswith("linux"):
        assert input_args("0")[-4:] == ["-f", "v4l2", "-i", "/dev/video0"]
    assert "-re" in input_args(video, realtime=True)
    assert input_args(video)[-1] == str(video.absolute())


# ---------------------------------------------------------------------- causal smoothing
def test_one_euro_filter_is_causal_and_steady():
    from headpuppet.live import OneEuroFilter, smoothing_filter

    assert smoothing_filter(0.0, 25, 128) is None
    f = smoothing_filter(1.0, 25, 128)
    assert abs(f.min_cutoff - 25 / 7.5) < 1e-9
    rng = np.random.default_rng(0)
    still = np.full((68, 2), 50.0)
    outs = [f(still + rng.normal(0, 1.0, still.shape)) for _ in range(100)]
    jitter_in = 1.0
    jitter_out = np.std(np.stack(outs[20:]) - 50.0)
    assert jitter_out < 0.6 * jitter_in                       # noise is damped
    g = OneEuroFilter(25, min_cutoff=1.0, beta=0.0)
    y = [g(np.array([0.0 if t < 5 else 10.0]))[0] for t in range(40)]
    assert y[4] == 0.0 and 0 < y[5] < 10                      # nothing before the step, lag after it
    assert abs(y[-1] - 10.0) < 0.5                            # and it gets there
    fast = OneEuroFilter(25, min_cutoff=1.0, beta=1.0)
    z = [fast(np.array([0.0 if t < 5 else 10.0]))[0] for t in range(8)]
    assert z[5] > y[5]                                        # fast motion is followed sooner


# ---------------------------------------------------------------------- per-frame pipeline
def test_live_animator_steps_on_real_faces(loaded, frames):
    from headpuppet.live import LiveAnimator

    live = LiveAnimator(loaded.animator, loaded.person, detector=loaded.detector, relative=True, smooth=1.0,
                        reference_frames=3)
    size = loaded.animator.size
    first = live.track(frames[0])
    # the reference is the first frame itself: the source keeps its own landmarks
    np.testing.assert_allclose(first.points, loaded.person.points[0], atol=1e-3)
    outs = [live.render(first)] + [live.step(f) for f in frames[1:]]
    assert all(o.shape == (size, size, 3) and o.dtype == np.uint8 for o in outs)
    assert live.faces == len(frames) and live.held == 0
    assert live.reference is not None
    # a frame without a face holds the last landmarks
    black = np.zeros_like(frames[0])
    tr = live.track(black)
    assert not tr.face and live.held == 1
    # absolute mode, side by side: driver crop | result
    sbs = LiveAnimator(loaded.animator, loaded.person, detector=loaded.detector, relative=False, smooth=0,
                       side_by_side=True)
    assert sbs.output_size() == (2 * size, size)
    out = sbs.step(frames[0])
    assert out.shape == (size, 2 * size, 3)


def test_live_with_the_warp_guided_generator(tmp_path, frames):
    """The coming default model needs the source shots at render time: live goes through
    Animator.render, which gives them."""
    from headpuppet.live import LiveAnimator
    from headpuppet.fewshot.session import load_person

    pm = make_pm()
    mediapipe_or_skip(pm)
    ckpt = make_checkpoint(tmp_path, generator="warp", projection_sn=False)
    lo = load_person([shared_file(PHOTO)], checkpoint=ckpt, pm=pm)
    live = LiveAnimator(lo.animator, lo.person, detector=lo.detector, side_by_side=True)
    outs = [live.step(f) for f in frames[:3]]
    size = lo.animator.size
    assert all(o.shape == (size, 2 * size, 3) for o in outs) and live.faces == 3


def test_live_compile_warms_up_before_the_stream_and_renders_through_the_compiled_g(loaded, frames, monkeypatch):
    """compile=True: warm_up() makes the (stand-in) compile happen once, at batch 1, before any frame;
    the frames then go through it and match the eager ones within float rounding."""
    import torch

    import headpuppet.fewshot.animator as animator_module
    from headpuppet.live import LiveAnimator

    shapes, made = [], []

    def fake_compile(module, **kw):
        made.append(kw)

        def run(y, **src):
            shapes.append(tuple(y.shape))
            return module(y, **src)
        return run

    monkeypatch.setattr(animator_module, "_no_cpp_compiler", lambda: None)
    monkeypatch.setattr(torch, "compile", fake_compile)
    # fp32: the compiled fold (up-sampling convs as they are) and the eager one differ by rounding only
    monkeypatch.setattr(loaded.animator, "precision", "fp32")
    loaded.animator._compile_cache.clear()
    eager = LiveAnimator(loaded.animator, loaded.person, detector=loaded.detector)
    want = [eager.step(f) for f in frames[:3]]
    live = LiveAnimator(loaded.animator, loaded.person, detector=loaded.detector, compile=True)
    live.warm_up()
    assert len(made) == 1 and len(shapes) == 1 and shapes[0][0] == 1   # compiled before the first frame
    got = [live.step(f) for f in frames[:3]]
    assert len(made) == 1 and len(shapes) == 4                            # every frame through it
    assert all(np.abs(a.astype(int) - b).max() <= 1 for a, b in zip(got, want))
    loaded.animator._compile_cache.clear()


def test_before_any_face_the_person_is_still(loaded, frames):
    from headpuppet.live import LiveAnimator

    live = LiveAnimator(loaded.animator, loaded.person, detector=loaded.detector)
    black = np.zeros_like(frames[0])
    a, b = live.step(black), live.step(black)
    assert np.array_equal(a, b) and live.faces == 0 and live.held == 0
    np.testing.assert_array_equal(live.track(black).points, loaded.person.points[0])


def test_paste_back_live(loaded, frames):
    from headpuppet.live import LiveAnimator

    live = LiveAnimator(loaded.animator, loaded.person, detector=loaded.detector, paste=True)
    h, w = loaded.person.image.shape[:2]
    assert live.output_size() == (w, h)
    assert live.step(frames[0]).shape == (h, w, 3)


# ---------------------------------------------------------------------- reading and writing streams
def test_frame_source_keeps_every_frame_of_a_pipe(tmp_path):
    from headpuppet.live import FrameSource

    fifo = tmp_path / "drv.pipe"
    os.mkfifo(fifo)
    feeder = subprocess.Popen([ffmpeg(), "-loglevel", "error", "-y", "-i", str(shared_file(VIDEO)), "-frames:v", str(N),
                               "-f", "mpegts", "-c:v", "mpeg2video", "-q:v", "2", str(fifo)])
    try:
        with FrameSource(fifo) as src:
            assert not src.drop_late
            assert (src.info.width, src.info.height) == (256, 256)
            got = [i for i, frame, t in src]
            time.sleep(0.01)        # slow consumer: nothing is dropped
    finally:
        feeder.wait(30)
    assert got == list(range(N)) and src.dropped == 0


def test_frame_source_drops_late_frames_of_a_realtime_stream():
    from headpuppet.live import FrameSource

    lat = []
    with FrameSource(shared_file(VIDEO), realtime=True) as src:
        assert src.drop_late and src.info.fps == 25
        for i, frame, t in src:
            lat.append(time.perf_counter() - t)
            time.sleep(0.1)                     # 10 frames/s against a 25 fps stream
            if len(lat) >= 12:
                break
    assert src.dropped > 0                     # it skipped ahead instead of queueing
    assert max(lat) < 0.5                      # so each frame taken is fresh


def test_a_stream_that_is_not_video_is_one_line(tmp_path):
    from headpuppet.errors import MediaError
    from headpuppet.live import FrameSource

    fifo = tmp_path / "garbage.pipe"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as f:
            f.write(b"this is not a video stream" * 2000)

    threading.Thread(target=feed, daemon=True).start()
    with pytest.raises(MediaError, match="no video came from it") as exc:
        with FrameSource(fifo, open_timeout=60):
            pass
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------------- the command, with generated streams
def test_live_cli_from_stdin_to_a_file(ckpt, tmp_path):
    """A generated stream piped into ``headpuppet live PHOTO -``: one output frame per input frame."""
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    gen = subprocess.Popen([ffmpeg(), "-loglevel", "error", "-i", str(shared_file(VIDEO)), "-frames:v", str(N),
                            "-f", "nut", "-c:v", "rawvideo", "-"], stdout=subprocess.PIPE)
    res = subprocess.run(_live_cmd(ckpt, "-", "-o", out, "--stats", stats), stdin=gen.stdout,
                         capture_output=True, text=True, env=_env(), timeout=300)
    gen.wait(30)
    assert res.returncode == 0, res.stderr
    assert frame_count(out) == N
    assert "latency per frame" in res.stderr and "frames/s" in res.stderr
    s = json.loads(stats.read_text())
    assert s["processed"] == N and s["dropped"] == 0 and len(s["frames"]["latency_ms"]) == N
    assert s["render_ms"]["mean"] > 0 and s["latency_ms"]["max"] >= s["latency_ms"]["median"]
    assert res.stdout == ""          # stdout stays free for a video stream


def test_animate_with_stdin_driver_streams_to_stdout(ckpt, tmp_path):
    """``animate PHOTO - -o -``: frames come out on stdout as a stream another program reads."""
    out = tmp_path / "read_back.mp4"
    gen = subprocess.Popen([ffmpeg(), "-loglevel", "error", "-i", str(shared_file(VIDEO)), "-frames:v", str(N),
                            "-f", "nut", "-c:v", "rawvideo", "-"], stdout=subprocess.PIPE)
    cmd = [sys.executable, "-m", "headpuppet", "animate", str(shared_file(PHOTO)), "-", "-o", "-",
           "--side-by-side", "--checkpoint", str(ckpt)]
    hp = subprocess.Popen(cmd, stdin=gen.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    gen.stdout.close()
    reader = subprocess.run([ffmpeg(), "-loglevel", "error", "-y", "-i", "-", "-c", "copy", str(out)],
                            stdin=hp.stdout, capture_output=True, timeout=300)
    err = hp.stderr.read().decode()
    assert hp.wait(60) == 0, err
    assert reader.returncode == 0, reader.stderr
    from headpuppet.media.video import probe

    info = probe(out)
    assert info.num_frames == N and info.width == 2 * info.height


def test_live_cli_realtime_stream_latency(ckpt, tmp_path):
    """A stream played at its own 25 fps (``--realtime``): frames are made as they come, late ones
    dropped; the summary says whether it keeps up."""
    stats = tmp_path / "stats.json"
    res = subprocess.run(_live_cmd(ckpt, shared_file(VIDEO), "--realtime", "-o", tmp_path / "rt.mp4",
                                   "--max-frames", N, "--stats", stats),
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr
    s = json.loads(stats.read_text())
    assert s["processed"] == N and s["fps_in"] == 25
    assert s["processed"] + s["dropped"] <= s["decoded"] + 1
    assert ("keeps up with 25 fps" in res.stderr) or ("does not keep up with 25 fps" in res.stderr)
    assert frame_count(tmp_path / "rt.mp4") >= 1


def test_live_cli_from_a_udp_stream(ckpt, tmp_path):
    """Any stream ffmpeg reads: MPEG-TS over UDP on loopback, sent at real time while we read."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"udp://127.0.0.1:{port}"
    sender = subprocess.Popen([ffmpeg(), "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(shared_file(VIDEO)),
                               "-c:v", "mpeg2video", "-q:v", "3", "-g", "5", "-f", "mpegts", f"{url}?pkt_size=1316"])
    try:
        out, stats = tmp_path / "udp.mp4", tmp_path / "udp.json"
        res = subprocess.run(_live_cmd(ckpt, f"{url}?timeout=20000000", "-o", out, "--max-frames", 10,
                                       "--stats", stats), capture_output=True, text=True, env=_env(), timeout=300)
    finally:
        sender.kill()
        sender.wait()
    assert res.returncode == 0, res.stderr
    s = json.loads(stats.read_text())
    assert s["processed"] == 10 and s["fps_in"] == 25 and s["stopped"] == "10 frames"
    assert "late frames are dropped" in res.stderr          # a network stream does not wait for us
    assert frame_count(out) >= 1                             # a real-time file (wall-clock stamps)


def test_live_cli_errors_are_one_line(ckpt, tmp_path):
    res = subprocess.run(_live_cmd(ckpt, "-", "-o", tmp_path / "x.mp4"), input=b"not a video" * 100,
                         capture_output=True, env=_env(), timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 1 and "Traceback" not in err and "error:" in err
    res = subprocess.run([sys.executable, "-m", "headpuppet", "live", "-", "--preview"], capture_output=True,
                         env={**_env(), "DISPLAY": ""}, timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 1 and "Traceback" not in err


def test_commands_are_listed_with_their_options():
    from typer.testing import CliRunner

    from headpuppet.cli import build_app
    from headpuppet.testing import strip_ansi

    app = build_app(make_pm())
    out = strip_ansi(CliRunner().invoke(app, ["--help"]).output)
    assert "live" in out and "ui" in out
    out = strip_ansi(CliRunner().invoke(app, ["ui", "--help"], env={"COLUMNS": "200"}).output)
    assert "--host" in out and "127.0.0.1" in out and "--port" in out and "--share" in out
    out = strip_ansi(CliRunner().invoke(app, ["live", "--help"], env={"COLUMNS": "200"}).output)
    for opt in ("--output", "--preview", "--realtime", "--drop", "--stats", "--relative", "--paste-back"):
        assert opt in out, opt
