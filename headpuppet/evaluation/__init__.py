"""Evaluation: the paper's self-reenactment protocol (Zakharov et al. 2019, section 4).

In: a meta-train checkpoint (or none, for baselines only), a preprocessed dataset of held-out
videos (:mod:`headpuppet.data`), the names of baselines and of metrics (plugins registered through
``register_metrics``; the first-party ones are in ``headpuppet_plugins.metrics``). Out:
:class:`EvalResults` - one row per method and number of shots K, one column per metric - written
as ``metrics.json``, ``report.md`` and PNGs.

- :mod:`.api` - :func:`evaluate`, the whole stage as one call (what ``headpuppet evaluate`` runs).
- :mod:`.protocol` - the protocol: which frames are shots and targets, the :class:`Method`
  protocol, the runner and its results.
- :mod:`.metric` - the metric protocol (:class:`Metric`, :class:`MetricBatch`, helpers for metric
  authors) and :func:`load_metrics`; the metrics themselves are plugins.
- :mod:`.methods` - the model as a method, feed-forward (FF) or fine-tuned (FT).
- :mod:`.baselines` - training-free comparators: ``copy``, ``warp`` and ``warp-pwa``.
- :mod:`.report` - the table, ``metrics.json``, ``report.md`` and the PNGs.
"""

from .api import choose_detector, evaluate
from .baselines import BASELINES, CopyBaseline, WarpBaseline, make_baseline
from .methods import ModelMethod
from .metric import (PAPER_METRICS, FeatureCache, Metric, MetricBatch, MetricStatus, MetricValue, PairedMetric,
                     load_metrics, metric_column)
from .protocol import (DEFAULT_SHOTS, CellResult, EvalResults, EvalSettings, Example, Method, Skip, plan_video,
                       run_evaluation)

__all__ = [
    "evaluate", "choose_detector",
    "BASELINES", "CopyBaseline", "WarpBaseline", "make_baseline", "ModelMethod",
    "PAPER_METRICS", "FeatureCache", "Metric", "MetricBatch", "MetricStatus", "MetricValue", "PairedMetric",
    "load_metrics", "metric_column",
    "DEFAULT_SHOTS", "CellResult", "EvalResults", "EvalSettings", "Example", "Method", "Skip", "plan_video",
    "run_evaluation",
]
