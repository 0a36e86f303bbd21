"""Run folders and the stats file, numbered and laid out like NVlabs/edm's training runs.

``runs/00003-small-128-k4/`` holds the resolved ``config.yaml``, ``stats.jsonl`` (one JSON object per
logged step: every loss term, learning rates, seconds per step, samples per second), ``samples/``
(``step-0000500.png`` grids and ``losses.png``) and ``checkpoints/``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

_RUN_ID = re.compile(r"^(\d+)-")


def describe(cfg) -> str:
    """Short run description: ``<preset>-k<K>`` (e.g. ``small-128-k4``)."""
    preset = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(cfg.preset or "custom"))
    return f"{preset}-k{cfg.train.k_shots}"


def new_run_dir(out_root: str | Path, desc: str) -> Path:
    """Create ``out_root/NNNNN-desc`` with the next free number (safe against a concurrent run)."""
    root = Path(out_root)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        ids = [int(m.group(1)) for p in root.iterdir() if p.is_dir() and (m := _RUN_ID.match(p.name))]
        path = root / f"{max(ids, default=-1) + 1:05d}-{desc}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another run took the number between listing and mkdir
            continue


class StatsWriter:
    """Appends one JSON line per record to ``stats.jsonl`` (flushed, so a crash loses nothing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run re-does the steps after its checkpoint), and any
        line a crash left half-written."""
        if not self.path.exists():
            return
        keep = [json.dumps(rec) for rec in _records(self.path) if _step_of(rec) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in keep))
        os.replace(tmp, self.path)

    def write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _records(path: Path) -> list[dict]:
    """The JSON objects of a stats file; lines that do not parse (a crash mid-write) are skipped."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _step_of(rec: dict) -> float:
    try:
        return float(rec.get("step", 0))
    except (TypeError, ValueError):
        return float("inf")  # no usable step: dropped on truncation


def read_stats(path: str | Path) -> list[dict]:
    """Every record of ``stats.jsonl`` (a half-written last line is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    return _records(path)
