"""Keep native libraries' log lines off the terminal, and everything else on it.

MediaPipe's C++ (absl logging), and the TensorFlow Lite runtime inside it, write start-up chatter to
file descriptor 2 directly, past Python's ``sys.stderr``::

    W0000 00:00:1732000000.123456   26890 inference_feedback_manager.cc:114] Feedback manager ...
    INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR

The detector mutes fd 2 around its own calls (``native_stderr_muted`` in the mediapipe plugin), but its
graph threads keep writing after that. Muting fd 2 for the whole process would also hide what a crash
prints, so the command line (:func:`install_stderr_filter`, first thing in ``headpuppet.cli.main``)
runs fd 2 through a small filter process that drops the lines :func:`is_native_log_line` recognises
and passes everything else on. ``-vv`` or ``HEADPUPPET_NATIVE_LOGS=1`` turns the filter off.

Torch-free and cheap to import (standard library only).
"""

from __future__ import annotations

import io
import os
import re
import select
import signal
import sys

__all__ = ["is_native_log_line", "install_stderr_filter", "stderr_to_devnull", "FILTER_ENV"]

#: Set (to the filter's pid) in the environment of a process whose fd 2 runs through the filter, and
#: so inherited by its children (preprocess workers), which then need no muting of their own.
FILTER_ENV = "HEADPUPPET_STDERR_FILTER"

# The patterns, each anchored at the start of the line; anything they do not match passes.
_NATIVE = re.compile(
    rb"(?:"
    # absl / glog line header: severity I, W or E, MMDD, time, thread id, file:line]. absl prints
    # the time as "00:00:<seconds since the epoch>.<us>" when the log system has no time zone yet,
    # hence \d+ seconds. F (FATAL) is left out on purpose: it is the reason for the abort that follows.
    rb"[IWE]\d{4} \d\d:\d\d:\d+\.\d+\s+-?\d+ \S+:\d+\] "
    # TensorFlow Lite's minimal logger, its start-up messages only ("INFO: " alone is not enough:
    # other programs, uvicorn for one, start lines with it too)
    rb"|INFO: (?:Created|Initialized) TensorFlow Lite "
    rb"|INFO: Replacing \d+ (?:out of \d+ )?node\(s\) with delegate "
    rb"|INFO: Applying \d+ TensorFlow Lite delegate"
    # absl, once, before its first line when absl::InitializeLog() was never called
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR\r?$"
    rb")"
)

_PARTIAL_WAIT_S = 0.05  # how long an unfinished line may wait for the rest before it is judged
_MAX_LINE = 8192  # a longer line is judged on its start


def is_native_log_line(line: bytes | str) -> bool:
    """True for a line that a native library logs on its own (absl/glog ``I``, ``W``, ``E`` lines, TFLite's
    start-up ``INFO:`` lines, absl's "All log messages before absl::InitializeLog()" warning); False for
    anything else (tracebacks, error messages, empty lines). The line may keep its newline."""
    if isinstance(line, str):
        line = line.encode("utf-8", "replace")
    return _NATIVE.match(line.rstrip(b"\n")) is not None


def stderr_to_devnull() -> int | None:
    """Point file descriptor 2 at /dev/null; returns a duplicate of what it was (for ``os.dup2(saved, 2)``
    or a Python stream on it), or None when fd 2 cannot be used (then nothing changed)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        return None
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        os.close(saved)
        return None
    return saved


def _verbosity(argv: list[str]) -> int:
    """How many ``-v`` / ``--verbose`` the command line has, before any ``--``."""
    n = 0
    for arg in argv:
        if arg == "--":
            break
        if arg == "--verbose":
            n += 1
        elif re.fullmatch(r"-v+", arg):
            n += len(arg) - 1
    return n


_installed = False


def install_stderr_filter(argv: list[str] | None = None) -> bool:
    """Route file descriptor 2 of this process (and of the processes it starts) through a filter
    process that drops native log lines; Python's ``sys.stderr`` is pointed at the real stream, so
    tracebacks, warnings and progress bars reach it directly and in order. Returns True when installed.

    Call it once, before any thread exists (it forks): ``headpuppet.cli.main`` does so first. Skipped on
    Windows, when fd 2 is not usable or is /dev/null, with ``-vv`` in ``argv`` (default ``sys.argv[1:]``)
    and when ``HEADPUPPET_NATIVE_LOGS`` is set. The filter drains the pipe until every process that
    holds it has exited, so nothing written before a crash is lost; it ignores Ctrl-C for that reason.
    """
    global _installed
    if _installed or os.name != "posix" or not hasattr(os, "fork"):
        return False
    if os.environ.get("HEADPUPPET_NATIVE_LOGS"):
        return False
    if _verbosity(sys.argv[1:] if argv is None else list(argv)) > 1:
        return False
    try:
        st = os.fstat(2)
        try:
            null = os.stat(os.devnull)
            if (st.st_dev, st.st_ino) == (null.st_dev, null.st_ino):
                return False  # 2>/dev/null: nothing to filter
        except OSError:
            pass
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
        real = os.dup(2)  # non-inheritable: started processes get the pipe
    except (OSError, ValueError):
        return False
    try:
        rfd, wfd = os.pipe()
    except OSError:
        os.close(real)
        return False
    # Ctrl-C (or Ctrl-\) reaches the whole process group: the filter ignores them, so it keeps
    # draining what the dying processes still write. Blocked around the fork so that none can hit
    # the filter before it ignores them.
    quit_signals = {signal.SIGINT, signal.SIGQUIT}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, quit_signals)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in (rfd, wfd, real):
            os.close(fd)
        return False
    if pid == 0:  # the filter
        code = 0
        try:
            for sig in quit_signals:
                signal.signal(sig, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            _child(rfd, real)
        except BaseException:  # noqa: BLE001 - the filter must never return into the CLI
            code = 1
        os._exit(code)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(rfd)
    os.dup2(wfd, 2)
    os.close(wfd)
    # as Python makes its stderr: line-buffered (print's text and newline leave in one write)
    old = sys.stderr
    sys.stderr = io.TextIOWrapper(io.BufferedWriter(io.FileIO(real, "w")),
                                  encoding=getattr(old, "encoding", None) or "utf-8",
                                  errors=getattr(old, "errors", None) or "backslashreplace", line_buffering=True)
    os.environ[FILTER_ENV] = str(pid)
    _installed = True
    return True


def _child(rfd: int, real: int) -> None:
    """The filter process: only the pipe's read end and the real stderr (as fd 2) stay open; stdin
    and stdout are /dev/null, so it holds no pipe of whoever started the command."""
    import fcntl

    r = fcntl.fcntl(rfd, fcntl.F_DUPFD, 3)
    out = fcntl.fcntl(real, fcntl.F_DUPFD, 3)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(out, 2)
    try:
        maxfd = os.sysconf("SC_OPEN_MAX")
    except (OSError, ValueError):
        maxfd = 4096
    os.closerange(3, r)
    os.closerange(r + 1, max(maxfd, r + 1))
    _filter(r, 2)


def _filter(rfd: int, out: int) -> None:
    """Copy lines from ``rfd`` to ``out`` until EOF, without the native log lines. A line that is not
    finished is judged after a short wait, so prompts and partial writes are not held back."""
    broken = False

    def write(data: bytes) -> None:
        nonlocal broken
        while data and not broken:
            try:
                data = data[os.write(out, data):]
            except InterruptedError:
                continue
            except OSError:  # the terminal or the reader went away: keep draining, write nothing
                broken = True

    pending = b""  # the start of a line not judged yet
    mode = None  # None: at a line start; "pass" / "drop": the rest of a judged line
    while True:
        if pending and not select.select([rfd], [], [], _PARTIAL_WAIT_S)[0]:
            mode = "drop" if is_native_log_line(pending) else "pass"
            if mode == "pass":
                write(pending)
            pending = b""
        try:
            chunk = os.read(rfd, 65536)
        except InterruptedError:
            continue
        if not chunk:
            break
        keep = []
        if mode is not None:
            nl = chunk.find(b"\n")
            head, chunk = (chunk, b"") if nl < 0 else (chunk[:nl + 1], chunk[nl + 1:])
            if mode == "pass":
                keep.append(head)
            if nl >= 0:
                mode = None
        if chunk:
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            keep.extend(line + b"\n" for line in lines if not is_native_log_line(line))
            if len(pending) > _MAX_LINE:
                mode = "drop" if is_native_log_line(pending) else "pass"
                if mode == "pass":
                    keep.append(pending)
                pending = b""
        if keep:
            write(b"".join(keep))
    if pending and not is_native_log_line(pending):
        write(pending)
