"""What the bench/ scripts share: one JSON object per line on stdout, notes on stderr.

Every line starts with ``"figure"`` (what was measured), then the configuration it was measured in
(``machine``, ``cpus``, ``threads`` when torch is loaded, ``load``: the 1-minute load average at the
moment the line is printed), then the script's own configuration and its figures. NaN and infinite
values become ``null`` so that every line is strict JSON.

Importing this module sets malloc as every ``headpuppet`` command and API call does
(:func:`headpuppet.devices.tune_allocator`), so the scripts measure the code as it runs for a user;
``HEADPUPPET_MALLOC=default`` measures it with glibc's own setting (``bench/allocator.py`` compares the two).
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys

from headpuppet.devices import tune_allocator

tune_allocator()


def config(**kw) -> dict:
    """The machine's configuration, then ``kw``: ``machine``, ``cpus``, ``threads``, ``load``."""
    out = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["threads"] = torch.get_num_threads()
    out["load"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    out.update(kw)
    return out


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):  # numpy / torch scalars
        try:
            return _clean(v.item())
        except (TypeError, ValueError):
            pass
    return v


def emit(figure: str, fields: dict) -> None:
    """Print ``{"figure": figure, **fields}`` as one line on stdout, flushed."""
    print(json.dumps(_clean({"figure": figure, **fields})), flush=True)


def note(*args) -> None:
    """A human-readable line, on stderr."""
    print(*args, file=sys.stderr, flush=True)
