"""Settings of the page: :class:`UiConfig` (what ``headpuppet ui`` was started with, and the
models and fine-tuned people it offers), the defaults, and :func:`require_gradio`.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HeadpuppetError
from ..fewshot.animator import Animator, default_checkpoint
from ..fewshot.person import is_person_dir
from ..fewshot.session import AnimatorCache
from .helpers import mtime_or_zero, short_path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_SECONDS = 60.0
NO_PERSON = ""              # the person dropdown's "use the uploaded photos"


def require_gradio():
    """Import gradio, or say how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # no calls home from a local tool
    try:
        import gradio as gr  # optional dependency (the ui extra)
    except ImportError:
        raise HeadpuppetError("the web UI needs Gradio, an optional extra: pip install -e \".[ui]\" "
                              "(or pip install \"headpuppet[ui]\")") from None
    return gr


@dataclass


class UiConfig:
    """What ``headpuppet ui`` was started with."""

    checkpoints: list[Path] = field(default_factory=list)   # models offered besides the default
    people_dirs: list[Path] = field(default_factory=list)   # where fine-tuned person folders are looked for
    device: str = "cpu"
    max_seconds: float = DEFAULT_MAX_SECONDS
    out_dir: Path | None = None                             # results go here (default: a temp folder)
    pm: Any = None

    def __post_init__(self) -> None:
        self.cache = AnimatorCache(self.pm)
        self._people: dict[tuple[str, float], tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        if self.out_dir is None:
            self.out_dir = Path(tempfile.mkdtemp(prefix="headpuppet-ui-"))

    # -------------------------------------------------------------- choices
    def models(self) -> list[tuple[str, str]]:
        """(label, path) of the models on offer, the default (demo) model first."""
        out = []
        default = default_checkpoint()
        if default.exists():
            out.append((f"default model ({default.parent.name}/{default.name})", str(default)))
        for c in self.checkpoints:
            out.append((short_path(c), str(c)))
        return out

    def people(self) -> list[tuple[str, str]]:
        """(label, path) of the fine-tuned person folders found in ``people_dirs`` (and one level down)."""
        found: list[tuple[str, str]] = []
        for d in self.people_dirs:
            d = Path(d)
            candidates = [d] + (sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
                                if d.is_dir() else [])
            for p in candidates:
                try:
                    if is_person_dir(p) and str(p) not in {v for _, v in found}:
                        found.append((short_path(p), str(p)))
                except OSError:
                    continue
        return found

    def person_folder(self, path: str):
        """(animator, person) of a fine-tuned person folder, loaded once."""
        key = (str(Path(path).resolve()), mtime_or_zero(Path(path) / "meta.json"))
        with self._lock:
            if key not in self._people:
                self._people.clear()
                self._people[key] = Animator.from_person_dir(path, device=self.device, pm=self.pm)
            return self._people[key]

    def default_detector(self, model: str | None = None):
        return self.cache.get(model or None, self.device).make_detector()
