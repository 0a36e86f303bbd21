"""The evaluation report: ``metrics.json``, ``report.md`` and PNGs.

The table follows the layout of Zakharov et al. 2019, Table 1: one row per method and number of
shots, ``method (T)``, with the FID, SSIM, CSIM columns (plus landmark error, PSNR and any
third-party metric). The PNGs are what a person would look at first: for each K, rows of source
shots, the driver (real target) frame and each method's result; and one plot per metric against
the number of shots.

No Rich here (the CLI renders :func:`table` with Rich); matplotlib runs with the Agg backend.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .metric import DEFAULT_DECIMALS, PAPER_METRICS
from .protocol import EvalResults

NOT_COMPUTED = "n/c"


def metric_order(results: EvalResults) -> list[str]:
    """Paper's columns first (FID, SSIM, CSIM, landmark error), then the others in request order."""
    names = list(results.metrics)
    return [n for n in PAPER_METRICS if n in names] + [n for n in names if n not in PAPER_METRICS]


def header(results: EvalResults, name: str) -> str:
    st = results.metrics[name]
    arrow = "" if st.higher_is_better is None else (" ↑" if st.higher_is_better else " ↓")
    return f"{st.label or name}{arrow}"


def format_value(value: dict | None, decimals: int = DEFAULT_DECIMALS) -> str:
    """A cell: the value with the metric's decimals (from its plugin), ``n/c`` when not computed,
    with ``*`` when some frames failed."""
    if value is None or value.get("value") is None:
        return NOT_COMPUTED
    v = value["value"]
    if isinstance(v, float) and math.isinf(v):
        text = "inf"
    else:
        text = f"{v:.{decimals}f}"
    return text + ("*" if value.get("failed") else "")


def table(results: EvalResults) -> tuple[list[str], list[list[str]]]:
    """``(headers, rows)`` of the results table; rows grouped by K as the paper's Table 1."""
    names = metric_order(results)
    headers = ["Method (T)"] + [header(results, n) for n in names] + ["frames"]
    rows = []
    for cell in sorted(results.cells, key=lambda c: (c.shots, results.methods.index(c.method))):
        row = [cell.row]
        for n in names:
            st = results.metrics[n]
            row.append(format_value(cell.metrics.get(n), st.decimals) if st.computed else NOT_COMPUTED)
        row.append(str(cell.frames))
        rows.append(row)
    return headers, rows


def notes(results: EvalResults) -> list[str]:
    """One line per thing a reader must know: metrics not computed (with the fix), failed frames,
    skipped videos."""
    out = []
    for name, st in results.metrics.items():
        if not st.computed:
            out.append(f"{st.label or name}: not computed: {st.reason}")
    failed: dict[str, int] = {}
    for cell in results.cells:
        for name, v in cell.metrics.items():
            if v.get("failed"):
                failed[name] = failed.get(name, 0) + int(v["failed"])
    for name, n in failed.items():
        what = "no face detected in the generated frame" if name == "landmark-error" else "could not be scored"
        out.append(f"* {results.metrics[name].label or name}: {n} frames left out ({what})")
    counts = results.skipped_counts()
    if counts:
        parts = ", ".join(f"K={k}: {n}" for k, n in sorted(counts.items(), key=lambda kv: int(kv[0])))
        out.append(f"skipped (video shorter than K + 1 frames): {parts}")
    return out


def write_json(results: EvalResults, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results.to_json(), indent=1, sort_keys=False, default=_json_default) + "\n")
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def markdown(results: EvalResults, images: list[str] | None = None) -> str:
    headers, rows = table(results)
    s = results.settings
    lines = ["# Self-reenactment evaluation", ""]
    ck = results.checkpoint
    lines.append(f"- checkpoint: {ck.get('path') if ck else 'none (baselines only)'}"
                 + (f" (step {ck.get('step')})" if ck and ck.get("step") is not None else ""))
    lines.append(f"- dataset: {results.dataset.get('path', '')} ({results.dataset.get('videos')} videos evaluated, "
                 f"{results.dataset.get('size', '?')} px)")
    lines.append(f"- protocol: K shots from the first part of each video, {s['frames_per_video']} target frames "
                 f"per video from its second half (never seen); seed {s['seed']}")
    lines.append(f"- methods: {', '.join(results.methods)}; T = number of shots")
    lines += ["", "| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    extra = notes(results)
    if extra:
        lines += [""] + [f"- {n}" for n in extra]
    csim = []
    if "csim-dlib" in results.metrics:
        csim.append("CSIM (dlib) is the cosine similarity of dlib face-ResNet descriptors of each generated frame "
                    "and its real target, both aligned from the target's landmarks")
    if "csim" in results.metrics:
        csim.append("CSIM (ArcFace) is the cosine similarity of ArcFace embeddings of each generated frame and "
                    "the source")
    lines += ["", "FID compares the set of generated frames with the set of real ones (lower is better); SSIM and "
              "PSNR compare each frame with its real target; " + "".join(c + "; " for c in csim) +
              "landmark error is the detector's landmarks on the generated frame against the target's, over the "
              "inter-ocular distance."]
    if images:
        lines += ["", "## Pictures", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in images]
    return "\n".join(lines) + "\n"


def _plt():
    # local: matplotlib (+0.35 s, measured) only when a picture is drawn, and pyplot only after use("Agg")
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def examples_png(results: EvalResults, k: int, path: str | Path, max_sources: int = 3) -> Path | None:
    """Grid for K = ``k``: one row per example video: sources | driver | each method."""
    exs = [e for e in results.examples if e.shots == k]
    if not exs:
        return None
    plt = _plt()
    n_src = min(max_sources, max(len(e.sources) for e in exs))
    methods = [m for m in results.methods if any(m in e.outputs for e in exs)]
    cols = n_src + 1 + len(methods)
    fig, axes = plt.subplots(len(exs), cols, figsize=(1.9 * cols, 2.0 * len(exs) + 0.3), squeeze=False)
    for r, e in enumerate(exs):
        cells = [(f"source {i + 1}" if i < len(e.sources) else "", e.sources[i] if i < len(e.sources) else None)
                 for i in range(n_src)]
        cells.append(("driver (target)", e.driver))
        cells += [(m, e.outputs.get(m)) for m in methods]
        for c, (title, img) in enumerate(cells):
            ax = axes[r, c]
            ax.axis("off")
            if img is not None:
                ax.imshow(img)
            if c == n_src:  # the target's landmarks, which every method was asked to follow
                ax.scatter(e.driver_points[:, 0], e.driver_points[:, 1], s=1.5, c="lime", linewidths=0)
            ax.set_title(title if r == 0 else "", fontsize=9)
        axes[r, 0].text(-0.05, 0.5, e.video, transform=axes[r, 0].transAxes, rotation=90, va="center",
                        ha="right", fontsize=7)
    more = f" (first {n_src} of {k} shots)" if k > n_src else ""
    fig.suptitle(f"K = {k}{more}: sources, driver with its landmarks, results", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def shots_plot_png(results: EvalResults, path: str | Path) -> Path | None:
    """One panel per computed metric: value against K (log scale), one line per method."""
    names = [n for n in metric_order(results) if results.metrics[n].computed]
    ks = sorted({c.shots for c in results.cells})
    if not names or not ks:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names):
        for method in results.methods:
            pts = [(c.shots, c.metrics.get(name, {}).get("value")) for c in results.cells if c.method == method]
            pts = [(k, v) for k, v in sorted(pts) if v is not None and np.isfinite(v)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        ax.set_title(header(results, name), fontsize=10)
        ax.set_xlabel("shots (K)")
        if len(ks) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def write_report(results: EvalResults, out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md``, ``examples-k{K}.png`` and ``metrics-vs-shots.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {"metrics.json": write_json(results, out / "metrics.json")}
    images = []
    for k in sorted({c.shots for c in results.cells}):
        p = examples_png(results, k, out / f"examples-k{k}.png")
        if p is not None:
            files[p.name] = p
            images.append(p)
    p = shots_plot_png(results, out / "metrics-vs-shots.png")
    if p is not None:
        files[p.name] = p
        images.append(p)
    (out / "report.md").write_text(markdown(results, [str(i) for i in images]))
    files["report.md"] = out / "report.md"
    return files
