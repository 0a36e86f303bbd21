"""A small progress-reporting interface, so library code never imports Rich.

Long-running library functions take ``reporter: Reporter | None``; the CLI passes a Rich-backed one
(``headpuppet.cli._common.RichReporter``), tests pass nothing (silent).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger("headpuppet")


class Reporter:
    """Silent base reporter. Subclasses show progress to a person."""

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator["Task"]:
        """A unit of progress: ``with reporter.task("frames", total=n) as t: t.advance(1, loss=0.3)``."""
        yield Task()

    def info(self, message: str) -> None:
        """A line for the person watching (logged at INFO when silent)."""
        log.info(message)

    def warn(self, message: str) -> None:
        log.warning(message)


class Task:
    def advance(self, n: int = 1, **fields) -> None:
        """Move the bar ``n`` steps; ``fields`` (e.g. live loss terms) are shown beside it."""

    def update(self, completed: int | None = None, total: int | None = None, **fields) -> None:
        """Set absolute progress."""


NULL = Reporter()
