"""Small helpers of the page: upload values (as Gradio gives them) -> paths, the one-line markdown
messages shown under each step, and names safe for files.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def short_path(path: Path | str) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def mtime_or_zero(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def upload_paths(files) -> list[str]:
    """Upload values (paths, dicts with a path, objects with .name/.path) -> paths."""
    if files is None:
        return []
    if not isinstance(files, (list, tuple)):
        files = [files]
    out = []
    for f in files:
        if f is None:
            continue
        if isinstance(f, dict):
            f = f.get("path") or f.get("video", {}).get("path") or f.get("name")
        elif not isinstance(f, (str, os.PathLike)):
            f = getattr(f, "path", None) or getattr(f, "name", None)
        if f:
            out.append(str(f))
    return out


def uploaded_driver(video) -> str | None:
    paths = upload_paths(video)
    return paths[0] if paths else None


def status_md(ok: bool, title: str, lines: list[str]) -> str:
    mark = "✔" if ok else "⚠"     # in DejaVu Sans, so they show without an emoji font
    body = "".join(f"\n- {escape_md(line)}" for line in lines)
    return f"{mark} **{escape_md(title)}**{body}"


def escape_md(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>#|])", r"\\\1", str(text))


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "result"
