"""headpuppet.nativelog: which lines count as native log lines, and the stderr filter the command line
installs (a forked process between fd 2 and the real stderr)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from headpuppet.media.imaging import write_image
from headpuppet.nativelog import FILTER_ENV, is_native_log_line

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the stderr filter is POSIX-only")

GLOG = b"W0000 00:00:1732000000.123456   26890 inference_feedback_manager.cc:114] Feedback manager requires a model"

GLOG_NL = GLOG + b"\n"

NATIVE = [
    GLOG.decode(),
    "I0000 00:00:1796037165.849482   26890 gl_context.cc:369] GL version: 3.2 (OpenGL ES 3.2 Mesa 23.2.1)",
    "W0000 00:00:1796037239.146903   27796 landmark_projection_calculator.cc:186] Using NORM_RECT without "
    "IMAGE_DIMENSIONS is only supported for the square ROI.",
    "E1130 11:10:12.345678 12345 calculator_graph.cc:887] some graph error",
    "I1130 11:10:12.345678    42 face_landmarker_graph.cc:174] Sets FaceBlendshapesGraph acceleration to xnnpack "
    "by default.\n",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "INFO: Initialized TensorFlow Lite runtime.",
    "INFO: Replacing 212 out of 212 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions.",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
]

OTHER = [
    "Traceback (most recent call last):",
    '  File "/x/headpuppet/cli/__init__.py", line 80, in main',
    "Error: Missing option '--out' / '-o'.",
    "error: no face found in photo.jpg",
    "",
    "\n",
    "preprocess: INFO: Created TensorFlow Lite is only a quote here",
    "the INFO: Created TensorFlow Lite line is dropped",
    "INFO:     Uvicorn running on http://127.0.0.1:8000 (Press CTRL+C to quit)",
    "INFO:root:a Python logging line",
    "WARNING: something else",
    # FATAL lines explain the abort that follows: kept
    "F0000 00:00:1732000000.123456   26890 calculator_graph.cc:12] Check failed: graph != nullptr",
    "Fatal Python error: Aborted",
    "Segmentation fault (core dumped)",
    "W0000 missing the rest of the header",
]


@pytest.mark.parametrize("line", NATIVE)
def test_native_log_lines(line):
    assert is_native_log_line(line)
    assert is_native_log_line(line.encode())


@pytest.mark.parametrize("line", OTHER)
def test_other_lines_pass(line):
    assert not is_native_log_line(line)
    assert not is_native_log_line(line.encode())


# ---------------------------------------------------------------------------- the filter process


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("HEADPUPPET_NATIVE_LOGS", FILTER_ENV)}
    return {**env, **extra}


def _program(body: str, argv: str = "[]", pre: str = "") -> list[str]:
    code = ("import os, sys, time\n" + pre +
            "from headpuppet.nativelog import install_stderr_filter\n"
            f"installed = install_stderr_filter({argv})\n" + body)
    return [sys.executable, "-c", code]


def _run(body: str, argv: str = "[]", pre: str = "", **env) -> subprocess.CompletedProcess:
    return subprocess.run(_program(body, argv, pre), capture_output=True, timeout=60, env=_env(**env))


WRITE_BOTH = f"os.write(2, {GLOG_NL!r}); os.write(2, b'normal native line\\n')\n"


def test_filter_drops_native_log_lines_and_keeps_the_rest():
    res = _run(WRITE_BOTH + "print('python line', file=sys.stderr); print('out', installed)")
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"out True\n"
    assert b"normal native line\n" in res.stderr and b"python line\n" in res.stderr
    assert b"inference_feedback_manager" not in res.stderr


def test_native_logs_env_and_vv_turn_the_filter_off():
    for res in (_run(WRITE_BOTH + "print(installed)", HEADPUPPET_NATIVE_LOGS="1"),
                _run(WRITE_BOTH + "print(installed)", argv="['-vv', 'preprocess']"),
                _run(WRITE_BOTH + "print(installed)", argv="['--verbose', '-v', 'preprocess']")):
        assert res.stdout == b"False\n"
        assert b"normal native line" in res.stderr and b"inference_feedback_manager" in res.stderr
    res = _run(WRITE_BOTH + "print(installed)", argv="['-v', 'preprocess']")
    assert res.stdout == b"True\n" and b"inference_feedback_manager" not in res.stderr


def test_output_before_an_abort_arrives():
    res = _run(f"os.write(2, {GLOG_NL!r}); os.write(2, b'about to abort\\n'); os.abort()")
    assert res.returncode == -signal.SIGABRT
    assert b"about to abort\n" in res.stderr and b"inference_feedback_manager" not in res.stderr


def test_python_traceback_reaches_stderr():
    res = _run("raise RuntimeError('boom from python')")
    assert res.returncode == 1
    assert b"Traceback (most recent call last)" in res.stderr and b"RuntimeError: boom from python" in res.stderr


def test_worker_processes_write_through_the_filter():
    """Processes started later inherit fd 2 = the pipe (and the marker that says so)."""
    child = f"import os; os.write(2, {GLOG_NL!r}); os.write(2, b'from the child\\n'); print(os.environ[{FILTER_ENV!r}])"
    res = _run(f"import subprocess; subprocess.run([sys.executable, '-c', {child!r}], check=True)")
    assert res.returncode == 0, res.stderr
    assert b"from the child\n" in res.stderr and b"inference_feedback_manager" not in res.stderr
    assert res.stdout.strip().isdigit()


def test_filter_ignores_ctrl_c_and_keeps_draining():
    # Python's own Ctrl-C handler, as in a terminal (a shell's background job starts with SIGINT ignored);
    # the filter must ignore it all the same
    res = _run(f"time.sleep(0.2); os.kill(int(os.environ[{FILTER_ENV!r}]), signal.SIGINT); time.sleep(0.2); "
               "os.write(2, b'after ctrl-c\\n')",
               pre="import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n")
    assert res.returncode == 0 and b"after ctrl-c\n" in res.stderr


def test_an_unfinished_line_is_not_held_back():
    """A prompt without a newline reaches the terminal while the program waits."""
    proc = subprocess.Popen(_program("os.write(2, b'Overwrite? [y/N] '); sys.stdin.read()"),
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    try:
        got = b""
        deadline = time.monotonic() + 20
        while b"[y/N] " not in got and time.monotonic() < deadline:
            if select.select([proc.stderr], [], [], 0.5)[0]:
                got += os.read(proc.stderr.fileno(), 1024)
        assert got == b"Overwrite? [y/N] "
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stderr.close()


def test_the_filter_holds_no_pipe_of_the_caller(tmp_path):
    """capture_output returns as soon as the program exits; the filter, alive as long as a process
    holds its pipe, does not keep the caller's stdout open either."""
    t = time.monotonic()
    res = _run("print('done', installed)")
    assert res.stdout == b"done True\n" and time.monotonic() - t < 30
    # a grandchild keeps the filter's pipe (fd 2) open, so the filter outlives the program
    body = ("import subprocess; p = subprocess.Popen(['sleep', '20'], stdout=subprocess.DEVNULL); "
            "print(p.pid, installed, flush=True)")
    out = b""
    with open(tmp_path / "stderr", "wb") as err:  # a file: with /dev/null the filter is not needed
        t = time.monotonic()
        proc = subprocess.Popen(_program(body), stdout=subprocess.PIPE, stderr=err, env=_env())
    try:
        out = proc.stdout.read()  # EOF only once nothing holds the write end of stdout
        assert time.monotonic() - t < 15, "the filter process holds the caller's stdout open"
        assert out.split()[1:] == [b"True"]
        proc.wait(timeout=30)
    finally:
        proc.stdout.close()
        if out.split()[:1] and out.split()[0].isdigit():
            os.kill(int(out.split()[0]), signal.SIGTERM)


# ------------------------------------------------------------------------------- the real command


def _native_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if is_native_log_line(line)]


def test_cli_preprocess_with_mediapipe_shows_native_lines_log_lines(tmp_path, astronaut):
    """MediaPipe logs from its graph threads after the detector's scoped mute has ended (2-4 lines
    without the filter); the command line drops them, -vv shows them."""
    frames = tmp_path / "astro"
    frames.mkdir()
    for i, dx in enumerate((0, 4)):
        write_image(frames / f"{i}.png", np.ascontiguousarray(np.roll(astronaut, dx, axis=1)[::2, ::2]))
    cmd = [sys.executable, "-m", "headpuppet"]
    env = _env(OMP_NUM_THREADS="1")
    quiet = subprocess.run([*cmd, "preprocess", str(frames), "--out", str(tmp_path / "a")],
                           capture_output=True, text=True, timeout=120, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert "frames kept" in quiet.stdout
    assert _native_lines(quiet.stderr) == []
    loud = subprocess.run([*cmd, "-vv", "preprocess", str(frames), "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert loud.returncode == 0, loud.stderr
    assert _native_lines(loud.stderr) != []
