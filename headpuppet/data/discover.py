"""Input discovery for ``headpuppet preprocess``: INPUT arguments -> sorted work items with unique ids.

An item is a video file or a folder of image frames (or an input that cannot be one, kept with the
reason so the summary can say it). Ids are deterministic, so a re-run and every shard of an array
job agree on them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import HeadpuppetError
from ..media.imaging import is_image, is_video
from .format import DATASET_JSON, sanitize_id

__all__ = ["Item", "discover", "assign_ids", "shard_items"]


@dataclass
class Item:
    """One unit of work: a video file or a folder of frames, or an input that cannot be one.

    ``kind`` is ``"video"``, ``"frames"`` or ``"error"`` (then ``reason`` says why).
    """

    source: Path
    kind: str
    rel: str  # path relative to its input root, without a video extension, "/"-separated
    person: str
    id: str = ""
    reason: str = ""



def _hidden(p: Path) -> bool:
    return p.name.startswith(".")


def _is_dataset_dir(p: Path) -> bool:
    return (p / DATASET_JSON).is_file()


def discover(inputs: list[Path], exclude: Path | None = None) -> list[Item]:
    """Expand the INPUT arguments into items (unsorted, ids not yet assigned).

    * a video file -> one item (id from its stem; person = the stem);
    * a folder whose files include images -> one "frames" item (its images in name order), and its
      video files and sub-folders are searched too;
    * any other folder -> searched recursively; ids are paths relative to the given folder, person
      is the first folder level below it (VoxCeleb2's ``idXXXXX/youtube_id/clip.mp4``) or the stem;
    * a missing path, a file that is neither video nor image, an empty folder -> an "error" item.

    Hidden files and folders, and folders that are headpuppet datasets (``exclude``, the output), are
    not searched.
    """
    items: list[Item] = []
    ex = exclude.resolve() if exclude is not None else None
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            items.append(Item(path, "error", path.name, path.stem, reason="no such file or folder"))
        elif path.is_file():
            if is_video(path):
                items.append(Item(path, "video", path.stem, path.stem))
            elif is_image(path):
                items.append(Item(path, "error", path.stem, path.stem,
                                  reason="a single image, not a video; put a video's frames in a folder"))
            else:
                items.append(Item(path, "error", path.stem, path.stem,
                                  reason=f"not a video (unsupported file type '{path.suffix or 'none'}')"))
        else:
            _walk(path, path, items, ex)
    return items


def _walk(folder: Path, root: Path, items: list[Item], exclude: Path | None) -> None:
    if exclude is not None and folder.resolve() == exclude or _is_dataset_dir(folder):
        return
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        items.append(Item(folder, "error", _rel(folder, root), folder.name, reason=f"cannot list ({exc.strerror})"))
        return
    entries = [e for e in entries if not _hidden(e)]
    images = [e for e in entries if e.is_file() and is_image(e)]
    if not entries:
        items.append(Item(folder, "error", _rel(folder, root), _person(folder, root),
                          reason="empty folder (no videos or image frames)"))
        return
    if images:
        items.append(Item(folder, "frames", _rel(folder, root), _person(folder, root)))
    for e in entries:
        if e.is_dir():
            _walk(e, root, items, exclude)
        elif is_video(e):
            items.append(Item(e, "video", _rel(e, root, strip_suffix=True), _person(e, root)))
        elif not is_image(e):
            items.append(Item(e, "error", _rel(e, root), _person(e, root),
                              reason=f"not a video (unsupported file type '{e.suffix or 'none'}')"))


def _rel(p: Path, root: Path, strip_suffix: bool = False) -> str:
    if p == root:
        return root.resolve().name or "input"
    rel = p.relative_to(root)
    if strip_suffix:
        rel = rel.with_suffix("")
    return rel.as_posix()


def _person(p: Path, root: Path) -> str:
    if p == root:
        return root.resolve().name or "input"
    parts = p.relative_to(root).parts
    return parts[0] if len(parts) > 1 else Path(parts[0]).stem


def assign_ids(items: list[Item]) -> list[Item]:
    """Sort items by source path and give each a unique, deterministic video id.

    The same source given twice is kept once. The id is the relative path with separators as ``_`` (``id00012/abc/00001.mp4`` ->
    ``id00012_abc_00001``); where two items would share an id, the first (by source path) keeps it
    and the others get ``_`` + 8 hex digits of a hash of their absolute path.
    """
    items = sorted(items, key=lambda it: str(it.source))
    unique: dict[Path, Item] = {}
    for it in items:  # the same file given twice (or found through two INPUTs) is one item
        unique.setdefault(it.source.resolve() if it.kind != "error" else it.source, it)
    items = list(unique.values())
    seen: set[str] = set()
    for it in items:
        base = sanitize_id(it.rel.replace("/", "_"))
        vid = base
        if vid in seen:
            digest = hashlib.sha1(str(it.source.resolve()).encode()).hexdigest()[:8]
            vid = f"{base}_{digest}"
        seen.add(vid)
        it.id = vid
    return items


def shard_items(items: list[Item], shard: tuple[int, int]) -> list[Item]:
    """Every ``n``-th item from ``i`` (items already sorted by :func:`assign_ids`)."""
    i, n = shard
    if n < 1 or not 0 <= i < n:
        raise HeadpuppetError(f"shard must be I/N with 0 <= I < N, got {i}/{n}")
    return items[i::n]
