"""Checks on where a command writes, run before any work: never over an input, always writable.

Every command that writes (``animate -o``, ``fine-tune --out``, ``preprocess --out``, ``evaluate
--out``, ``meta-train --out``, ``weights import/download --dir``) calls these first, so a wrong
path costs a one-line :class:`~headpuppet.errors.MediaError` instead of a destroyed input or a
failure after an hour of work. Paths are compared after resolving symlinks, ``..`` and ``./``
(and by inode where both exist, which catches hard links), so no spelling gets past them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import MediaError

Inputs = Iterable[tuple[str, "str | Path | None"]]


def real(path: str | Path) -> Path:
    """``path`` absolute with symlinks and ``..`` resolved (missing tails kept as written)."""
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(str(path)))))


def same_path(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name the same file or folder (any spelling, symlink or hard link)."""
    if real(a) == real(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_within(child: str | Path, parent: str | Path) -> bool:
    """Whether ``child`` is ``parent`` or lies somewhere below it (after resolving both)."""
    c, p = real(child), real(parent)
    return c == p or p in c.parents


def check_not_input(out: str | Path, inputs: Inputs, flag: str, *, inside: bool = True,
                    contains: bool = True) -> None:
    """Refuse an output that would write over one of the command's inputs.

    Args:
        out: the output file or folder.
        inputs: ``(what, path)`` pairs (``None`` paths are ignored), e.g. ``("driver", "d.mp4")``.
        flag: the option naming ``out`` (for the message).
        inside: also refuse ``out`` inside an input folder (writing into a checkpoint, a dataset).
        contains: also refuse ``out`` being a folder that holds an input (its files would be
            written beside, or over, the input's).

    Raises:
        MediaError: one line naming the input and the flag.
    """
    for what, path in inputs:
        if path is None or str(path) == "":
            continue
        if same_path(out, path):
            raise MediaError(f"{flag} {out} is the {what} ({path}); writing there would destroy it, "
                             f"choose another {flag}")
        if inside and Path(path).is_dir() and is_within(out, path):
            raise MediaError(f"{flag} {out} is inside the {what} {path}; it must not be modified, "
                             f"choose a {flag} outside it")
        if contains and is_within(path, out):
            raise MediaError(f"{flag} {out} holds the {what} {path}; writing there could overwrite it, "
                             f"choose another {flag}")


def _first_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    return p


def _probe_write(folder: Path) -> str | None:
    """``None`` when a file can be created in ``folder``, else the reason (works as root too)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        fd, name = tempfile.mkstemp(prefix=".headpuppet-write-check-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return None


def check_writable_dir(path: str | Path, flag: str) -> None:
    """``path`` is (or can be created as) a folder this process can write into.

    Nothing is created: the check writes and removes a probe file in the folder, or in its
    first existing ancestor when it does not exist yet.
    """
    path = Path(path)
    existing = _first_existing(path)
    if not existing.is_dir():
        what = "it" if existing == Path(os.path.abspath(path)) else str(existing)
        raise MediaError(f"cannot write {path}: {what} is a file, not a folder; choose another {flag}")
    reason = _probe_write(existing)
    if reason is not None:
        raise MediaError(f"cannot write {path}: {existing} is not writable ({reason}); choose another {flag}")


def check_writable_file(path: str | Path, flag: str) -> None:
    """``path`` names a file this process can create or replace (its folder may not exist yet)."""
    path = Path(path)
    if path.is_dir():
        raise MediaError(f"{path} is a folder; give {flag} a file name")
    parent = path.parent if str(path.parent) else Path(".")
    check_writable_dir(parent, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise MediaError(f"cannot write {path}: the file exists and is read-only; choose another {flag}")
