"""Shared CLI plumbing: consoles, logging, the error edge and the Rich reporter.

Only the CLI imports Rich; library code reports through :mod:`headpuppet.progress`.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..devices import resolve_device
from ..errors import HeadpuppetError
from ..progress import Reporter, Task

console = Console()
err_console = Console(stderr=True)


# ---------------------------------------------------------------------- garbage collection at start-up
#: the longest the collector stays off after :func:`pause_gc_for_startup`
GC_PAUSE_S = 5.0


def pause_gc_for_startup(limit_s: float = GC_PAUSE_S) -> None:
    """Python's cyclic garbage collector off while a command starts: importing torch and mediapipe
    and loading a model make hundreds of thousands of long-lived objects, and the collector walks
    them all again at each full collection (five of them, 0.4 s, before an animate's first frame
    here). :func:`resume_gc` turns it back on when the long work begins (the first progress bar),
    before any fork, or after ``limit_s`` at the latest, and freezes what start-up made, so later
    collections skip it. The quick start's animate without fine-tuning (183 frames) took 0.95x the
    time (median of eleven alternating pairs, 0.84-1.06x)."""
    if not gc.isenabled():
        return
    gc.disable()
    os.register_at_fork(before=resume_gc)
    timer = threading.Timer(limit_s, resume_gc)
    timer.daemon = True
    timer.start()


def resume_gc() -> None:
    """The collector back on, with what exists now frozen (:func:`pause_gc_for_startup`); idempotent."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


@dataclass
class CliState:
    """What every command can reach: the plugin manager and the commands plugins added."""

    pm: Any
    plugin_commands: list = field(default_factory=list)


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    if verbose > 1:
        os.environ["HEADPUPPET_NATIVE_LOGS"] = "1"  # native libraries' own stderr lines too (mediapipe)
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, RichHandler):
            root.removeHandler(h)
    handler = RichHandler(console=err_console, show_path=verbose > 1, show_time=verbose > 1, markup=False)
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s", force=True)


def default_device(device: str | None = None) -> str:
    """``device`` checked (auto, cpu, cuda, cuda:N), or cuda when available, else cpu
    (:func:`headpuppet.devices.resolve_device`, the one resolver), for commands that take ``--device``."""
    return str(resolve_device(device))


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` as one line on stderr and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


# Typer's own exceptions (exit, abort, and vendored click's usage errors): it reports them itself.
_TYPER_OWN = (typer.Exit, typer.Abort) + tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def handle_errors(fn: Callable) -> Callable:
    """Turn project errors into one line and a non-zero exit; Ctrl-C into exit 130.

    Also the last line of defence: running out of memory, an operating-system error (disk full,
    permission denied) or an unexpected exception is one line too (``-vv`` shows the traceback of
    an unexpected one, which is a bug to report).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except _TYPER_OWN:
            raise
        except HeadpuppetError as exc:
            code = getattr(exc, "exit_code", 1)
            if code != 1:  # stopped by a signal after saving: not an error, but not a finish either
                err_console.print(escape(str(exc)), highlight=False, soft_wrap=True)
                raise typer.Exit(code) from None
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None
        except MemoryError:
            raise fail("out of memory; use smaller inputs or a smaller --batch-size") from None
        except OSError as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
            raise fail(f"{where}{exc.strerror or _one_line(str(exc)) or type(exc).__name__}") from None
        except Exception as exc:
            if logging.getLogger().isEnabledFor(logging.DEBUG):
                raise
            raise fail(f"unexpected {type(exc).__name__}: {_one_line(str(exc))[:300]} (a bug: run again with "
                       "-vv for the traceback and report it)") from None

    return wrapper


class _RichTask(Task):
    def __init__(self, progress: Progress, task_id: int):
        self.progress, self.task_id = progress, task_id

    def _fields(self, fields: dict) -> str:
        return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())

    def advance(self, n: int = 1, **fields) -> None:
        self.progress.update(self.task_id, advance=n, **({"extra": self._fields(fields)} if fields else {}))

    def update(self, completed: int | None = None, total: int | None = None, **fields) -> None:
        kw: dict = {}
        if completed is not None:
            kw["completed"] = completed
        if total is not None:
            kw["total"] = total
        if fields:
            kw["extra"] = self._fields(fields)
        self.progress.update(self.task_id, **kw)


class RichReporter(Reporter):
    """Progress bars on stderr; quiet when stderr is not a terminal and ``force`` is off."""

    def __init__(self, console: Console | None = None, disable: bool = False):
        self.console = console or err_console
        self.disable = disable

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Task]:
        resume_gc()  # the long work starts: start-up is over (pause_gc_for_startup)
        progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(), TextColumn("{task.fields[extra]}"),
            console=self.console, disable=self.disable, transient=False,
        )
        with progress:
            task_id = progress.add_task(description, total=total, extra="")
            yield _RichTask(progress, task_id)

    def info(self, message: str) -> None:
        self.console.print(escape(message), highlight=False, soft_wrap=True)  # one line: the terminal wraps it

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
