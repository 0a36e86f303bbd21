"""The meta-training loop's failure paths: each ends in one line and a clean exit, never a hang.

* :func:`fetch` keeps a project error raised in a DataLoader worker one line (PyTorch re-raises it
  with the worker's whole traceback in the message);
* :func:`one_line_failures` turns running out of memory into one line naming the fix;
* :func:`half_made_iterator` and :func:`end_workers` shut loader workers down on every path, even
  when the iterator itself failed while starting them (the workers ignore SIGINT/SIGTERM, so the
  interpreter's exit handler would wait for them forever);
* :func:`check_batch_memory` refuses, before anything is built, a batch that cannot fit in memory;
* :class:`StopFlag` turns SIGINT/SIGTERM into a stop after the current step (a second Ctrl-C aborts),
  and :func:`worker_ignores_signals` keeps loader workers alive until the main process decides.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from contextlib import contextmanager

from ..config import Config
from ..errors import ConfigError, HeadpuppetError


def reason(exc: BaseException) -> str:
    """A short reason from a one-line error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _worker_message(exc: BaseException) -> str:
    """The original one-line message of an error re-raised from a DataLoader worker (PyTorch puts
    the worker's whole traceback into the message)."""
    text = str(exc)
    if "Original Traceback" not in text:
        return text
    last = [line for line in text.strip().splitlines() if line.strip()][-1]
    name = type(exc).__name__
    for prefix in (f"{type(exc).__module__}.{name}: ", f"{name}: "):
        if last.startswith(prefix):
            return last[len(prefix):]
    return last


def fetch(it):
    """``next(it)``; a project error from a worker keeps its one-line message."""
    try:
        return next(it)
    except HeadpuppetError as exc:
        msg = _worker_message(exc)
        if msg == str(exc):
            raise
        raise type(exc)(msg) from None


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


@contextmanager
def one_line_failures(trainer):
    """Running out of memory mid-run is one line naming the fix, not a traceback."""
    try:
        yield
    except Exception as exc:
        if not is_oom(exc):
            raise
        tc = trainer.cfg.train
        raise HeadpuppetError(f"out of memory at step {trainer.step} with batch size {tc.batch_size}, "
                              f"K={tc.k_shots}, {trainer.cfg.model.image_size}px on {trainer.device}; "
                              "lower --batch-size (or --k-shots)") from None


def half_made_iterator(exc: BaseException):
    """The DataLoader iterator whose construction raised ``exc`` (found in the traceback), so its
    already started workers can be shut down the normal way; ``None`` if there is none."""
    tb = exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if obj is not None and hasattr(obj, "_shutdown_workers") and hasattr(obj, "_workers"):
            return obj
        tb = tb.tb_next
    return None


def end_workers(before: set) -> None:
    """End the worker processes started since ``before`` that are still alive. They ignore
    SIGINT/SIGTERM (see :func:`worker_ignores_signals`), so the interpreter's exit handler, which
    terminates then joins them, would wait forever; a kill is the last resort (with PyTorch's
    SIGCHLD check off meanwhile, which would otherwise report the kill as a worker crash)."""
    stray = [p for p in set(multiprocessing.active_children()) - before]
    for proc in stray:
        proc.join(timeout=2.0)
    stray = [p for p in stray if p.is_alive()]
    if not stray:
        return
    main = threading.current_thread() is threading.main_thread()
    old = signal.getsignal(signal.SIGCHLD) if main else None
    if main:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        for proc in stray:
            proc.kill()
            proc.join(timeout=5.0)
    finally:
        if main and old is not None:
            signal.signal(signal.SIGCHLD, old)


def check_batch_memory(cfg: Config) -> None:
    """Refuse a batch that cannot fit in this machine's memory (one line) before anything is built:
    an absurd ``--batch-size`` would otherwise exhaust memory building its sampler and batches."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    tc, s = cfg.train, cfg.model.image_size
    # frames + landmark images of K shots and one target, float32, as collated (the networks need more)
    need = tc.batch_size * (tc.k_shots + 1) * 2 * 3 * s * s * 4
    if need > total:
        raise ConfigError(f"train.batch_size {tc.batch_size} needs {need / 2**30:.0f} GiB for one batch of "
                          f"{s}px episodes (K={tc.k_shots}), more than this machine's "
                          f"{total / 2**30:.0f} GiB of memory; lower --batch-size")


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps. A second SIGINT raises at once."""

    def __init__(self):
        self.set = False
        self.reason = ""

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def handler(signum, frame):
            if self.set and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.set = True
            self.reason = signal.Signals(signum).name

        for s in old:
            signal.signal(s, handler)
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def worker_ignores_signals(_worker_id: int) -> None:
    # Ctrl-C and SIGTERM reach the whole process group; the main process decides when to stop (after
    # the step, with a checkpoint). A worker killed by them would make the next batch fetch fail.
    # Workers still exit when the main process does (PyTorch's watchdog).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
