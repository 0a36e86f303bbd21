"""The metric protocol: what a ``register_metrics`` plugin gives and what it is given.

Zakharov et al. 2019, section 4 ("Metrics"). The metrics themselves are plugins (the first-party
ones are in ``headpuppet_plugins.metrics``); this module holds only what they share with the
runner:

* :class:`MetricBatch` - the frames of one batch a metric sees (generated, real target, source);
* :class:`Metric` - ``reset()`` / ``update(batch)`` / ``compute() -> MetricValue`` per table cell;
* :class:`PairedMetric` and :class:`FeatureCache` - helpers for metric authors (a mean of per-frame
  scores; features of real frames computed once across cells);
* :func:`load_metrics` - the requested metrics from the registry, with a :class:`MetricStatus`
  each: its column (label, direction, decimals, from the plugin's registration) and, for a metric
  that cannot run (weights missing), the reason with the command that fixes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import HeadpuppetError
from ..plugins import registry

#: order of the columns in the paper's table, then the others in request order
PAPER_METRICS = ("fid", "ssim", "csim", "csim-dlib", "landmark-error")
#: decimals of a metric whose plugin names none
DEFAULT_DECIMALS = 3


@dataclass
class MetricBatch:
    """What a metric sees for a batch of generated frames.

    Attributes:
        fake: ``(B, S, S, 3) uint8`` generated frames.
        real: ``(B, S, S, 3) uint8`` the real target frames they should reproduce.
        real_points: ``(B, 68, 2) float32`` the targets' landmarks (crop pixels).
        source: ``(B, S, S, 3) uint8`` the source shot each frame was made from (identity reference).
        source_points: ``(B, 68, 2) float32`` its landmarks.
        detector: a :class:`headpuppet.protocols.LandmarkDetector` for metrics that detect on the
            generated frames, or ``None`` when no detector is available.
        real_keys / source_keys: hashable ids of the real / source frames (video id, frame index),
            so metrics can cache what they compute on real frames across methods.
    """

    fake: np.ndarray
    real: np.ndarray
    real_points: np.ndarray
    source: np.ndarray
    source_points: np.ndarray
    detector: Any = None
    real_keys: list | None = None
    source_keys: list | None = None


@dataclass
class MetricValue:
    """A metric's result over a set of frames: ``value`` is None when it could not be computed
    (``note`` says why); ``count`` frames went into it; ``failed`` frames could not be scored."""

    value: float | None
    count: int
    failed: int = 0
    note: str = ""


@runtime_checkable
class Metric(Protocol):
    """One evaluation metric (what a ``register_metrics`` factory returns).

    Attributes:
        name: the registered name.
        label: the column header (``"SSIM"``).
        higher_is_better: the direction of improvement (shown as an arrow).
        kind: ``"paired"`` (averaged over frame pairs) or ``"set"`` (compares whole sets, like FID).
        decimals: optional, digits shown in the table (default 3).

    ``reset()`` starts a new set (one table cell); ``update(batch: MetricBatch)`` adds a batch
    (raising :class:`headpuppet.errors.HeadpuppetError` turns the metric into not computed, with
    that message); ``compute() -> MetricValue`` summarises the set.
    """

    name: str
    label: str
    higher_is_better: bool

    def reset(self) -> None: ...

    def update(self, batch: MetricBatch) -> None: ...

    def compute(self) -> MetricValue: ...


class PairedMetric:
    """Base for a mean over frames of a per-frame score: subclasses set ``name``, ``label``,
    ``higher_is_better`` (and ``decimals``) and implement ``scores(batch) -> (B,)`` float, NaN
    for a frame that could not be scored (counted as failed, left out of the mean)."""

    name = label = ""
    higher_is_better = True
    decimals = DEFAULT_DECIMALS
    kind = "paired"

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._values: list[float] = []
        self._failed = 0

    def scores(self, batch: MetricBatch) -> np.ndarray:
        raise NotImplementedError

    def update(self, batch: MetricBatch) -> None:
        s = np.asarray(self.scores(batch), np.float64)
        ok = ~np.isnan(s)
        self._failed += int((~ok).sum())
        self._values.extend(s[ok].tolist())

    def compute(self) -> MetricValue:
        if not self._values:
            return MetricValue(None, 0, self._failed, "no frame could be scored" if self._failed else "no frames")
        v = np.asarray(self._values)
        finite = v[np.isfinite(v)]
        # PSNR of an identical pair is inf; average the finite ones and say how many were perfect
        note = f"{len(v) - len(finite)} identical frames (inf) left out" if len(finite) < len(v) else ""
        value = float(finite.mean()) if len(finite) else math.inf
        return MetricValue(value, len(v), self._failed, note)


class FeatureCache:
    """Features of real / source frames keyed by (video, frame), reused across table cells."""

    def __init__(self):
        self.store: dict = {}

    def get(self, keys, images, fn):
        """``fn(images[missing])`` for the keys not seen yet; all features stacked in ``keys`` order
        (``fn(images)`` when ``keys`` is None)."""
        if keys is None:
            return fn(images)
        missing = [i for i, k in enumerate(keys) if k not in self.store]
        if missing:
            feats = fn(images[missing])
            for i, f in zip(missing, feats):
                self.store[keys[i]] = f
        return np.stack([self.store[k] for k in keys])


@dataclass
class MetricStatus:
    """Whether a requested metric runs and how its column looks; when it does not run, why and
    what fixes it (one line)."""

    name: str
    computed: bool
    label: str = ""
    higher_is_better: bool | None = None
    reason: str = ""
    decimals: int = DEFAULT_DECIMALS


def metric_column(entry, metric: Any = None) -> tuple[str, bool | None, int]:
    """``(label, higher_is_better, decimals)`` of a registered metric: the keywords its plugin gave
    ``register``, else the attributes of the metric object (or of the factory, e.g. a class), else
    ``(name, None, 3)``. Known without creating the metric, so one that cannot run still has its
    column header."""

    def pick(key: str):
        if entry.meta.get(key) is not None:
            return entry.meta[key]
        for source in (metric, entry.factory):
            value = getattr(source, key, None)
            if value is not None and value != "":
                return value
        return None

    decimals = pick("decimals")
    return pick("label") or entry.name, pick("higher_is_better"), DEFAULT_DECIMALS if decimals is None else int(decimals)


def load_metrics(pm, names: list[str] | None = None, weights_dir: Path | None = None,
                 device: str = "cpu") -> tuple[dict[str, Metric], dict[str, MetricStatus]]:
    """Create the requested metrics (default: every registered one, paper's first).

    A metric whose factory raises :class:`WeightsMissingError` (or any project error) is returned
    as not computed with that message, which names the fixing command; unknown names are errors.
    """
    reg = registry(pm, "metric")
    if names is None:
        names = [n for n in PAPER_METRICS if n in reg] + [n for n in reg.names() if n not in PAPER_METRICS]
    metrics: dict[str, Metric] = {}
    status: dict[str, MetricStatus] = {}
    for name in names:
        entry = reg[name]  # unknown -> PluginError listing the known ones
        try:
            m = entry.create(weights_dir, device=device)
        except HeadpuppetError as exc:
            label, hib, decimals = metric_column(entry)
            status[name] = MetricStatus(name, False, label, hib, str(exc), decimals)
            continue
        metrics[name] = m
        label, hib, decimals = metric_column(entry, m)
        status[name] = MetricStatus(name, True, label, hib, decimals=decimals)
    return metrics, status

