"""Load a model and a source person the way ``headpuppet animate`` does, for the other front ends
(``headpuppet live``, the web UI of ``headpuppet ui``).

SOURCE is what ``animate`` takes: photos, a folder of photos, a video (K frames sampled) or a
fine-tuned person folder. Everything goes through the library's own API
(:class:`~headpuppet.fewshot.animator.Animator`, :func:`~headpuppet.fewshot.sources.load_source_images`); there is
no logic of its own here beyond keeping loaded models around for a long-running UI.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MediaError
from ..progress import Reporter
from .animator import Animator, resolve_checkpoint
from .person import is_person_dir
from .sources import load_source_images


@dataclass
class Loaded:
    """A model, a person ready to render and the landmark detector to drive it with."""

    animator: Any          # headpuppet.fewshot.animator.Animator
    person: Any            # headpuppet.fewshot.person.Person
    detector: Any          # a landmark detector plugin instance
    source: str            # what the person was made from (for messages)


class AnimatorCache:
    """Loaded :class:`~headpuppet.fewshot.animator.Animator` objects by (checkpoint, device), so a UI loads
    each model once. Thread-safe; keeps the ``size`` most recently used."""

    def __init__(self, pm=None, size: int = 3):
        self.pm = pm
        self.size = size
        self._items: dict[tuple[str, str, float, str], Any] = {}
        self._lock = threading.Lock()

    def get(self, checkpoint: str | Path | None, device: str = "cpu", precision: str = "auto"):
        ckpt = resolve_checkpoint(checkpoint)
        key = (str(ckpt.resolve()), str(device), _mtime(ckpt), precision)
        with self._lock:
            if key in self._items:
                self._items[key] = self._items.pop(key)   # most recent last
                return self._items[key]
            animator = Animator.from_checkpoint(ckpt, device=device, pm=self.pm, precision=precision)
            self._items[key] = animator
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))
            return animator


def _mtime(path: Path) -> float:
    try:
        return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])
    except OSError:
        return 0.0


def load_person(sources: list[str | Path], *, checkpoint: str | Path | None = None, device: str = "cpu",
                pm=None, detector: str | None = None, shots: int = 8, finetune_steps: int | None = 0,
                reporter: Reporter | None = None, cache: AnimatorCache | None = None,
                precision: str = "auto") -> Loaded:
    """The model and person ``animate`` would use for ``sources`` (same checks, same messages).

    A single fine-tuned person folder brings its own networks (``checkpoint`` is then ignored);
    anything else is read with :func:`~headpuppet.fewshot.sources.load_source_images` (unreadable photos
    fail before the model loads), embedded by ``checkpoint`` (default: the demo model) and, with
    ``finetune_steps``, fine-tuned on its shots (paper section 3.4; ``None``: the model's own
    ``finetune.steps`` where it has a discriminator, none for a person folder, which is fine-tuned
    already). ``precision`` is how G renders
    (:func:`~headpuppet.fewshot.animator.resolve_precision`).
    """
    sources = [str(s) for s in sources]
    if not sources:
        raise MediaError("no SOURCE given; pass a photo, several photos, a folder of photos, a video "
                         "or a fine-tuned person folder")
    person_dir = len(sources) == 1 and is_person_dir(sources[0])
    if person_dir:
        animator, person = Animator.from_person_dir(sources[0], device=device, pm=pm, precision=precision)
        det = animator.make_detector(detector)
    else:
        src = load_source_images(sources, k=shots)   # unreadable photos fail before the model loads
        animator = (cache or AnimatorCache(pm)).get(checkpoint, device, precision)
        det = animator.make_detector(detector)
        person = animator.prepare_source(src.images, detector=det, labels=src.labels, reporter=reporter)
    if finetune_steps is None:  # a person folder is fine-tuned already
        finetune_steps = 0 if person_dir else animator.default_finetune_steps
    if finetune_steps:
        person = animator.fine_tune(person, finetune_steps, reporter=reporter)
    return Loaded(animator, person, det, ", ".join(Path(s).name for s in sources))
