"""Checkpoints: one safetensors file per network + metadata + training state.

Layout of ``RUN/checkpoints/step-0005000/``::

    embedder.safetensors  generator.safetensors  discriminator.safetensors  [generator_ema.safetensors]
    meta.json     {"format": "headpuppet-checkpoint", "version": 1, "step", "num_videos", "config",
                   "plugins": {"detector", "discriminator", "perceptual"}, "networks", "dtype", ...}
    state.pt      optimisers, EMA flag, RNG states, sampler position (``torch.load(weights_only=True)``)

Every safetensors file carries the same metadata (format, version, step, config JSON, plugin
names) so a single file is self-describing. The folder is written under a temporary name and
renamed into place; ``RUN/checkpoints/latest`` (a text file naming the folder) is replaced
atomically afterwards, so a crash never leaves ``latest`` pointing at a half-written checkpoint.
A checkpoint folder alone is enough to rebuild the networks: the config travels inside it.

:func:`export` writes a compact inference checkpoint (embedder + generator, EMA weights when the
run kept them, optionally the discriminator for fine-tuning; fp16 allowed) in the same format.
"""

from __future__ import annotations

import copy
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..config import Config, from_dict, to_dict
from ..errors import CheckpointError, ConfigError
from ..models import build_networks
from ..plugins import make_plugin_manager

FORMAT = "headpuppet-checkpoint"
VERSION = 1
NETWORKS = ("embedder", "generator", "discriminator", "generator_ema")
LATEST = "latest"


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns. Networks are on ``device`` in eval mode."""

    cfg: Config
    embedder: torch.nn.Module
    generator: torch.nn.Module
    discriminator: torch.nn.Module | None
    generator_ema: torch.nn.Module | None
    step: int
    meta: dict
    path: Path
    state: dict | None = field(default=None, repr=False)  # training state (state.pt) when asked for

    @property
    def inference_generator(self) -> torch.nn.Module:
        """The EMA generator when the run kept one, else the generator."""
        return self.generator_ema if self.generator_ema is not None else self.generator


# ----------------------------------------------------------------------------------------------- RNG

def rng_state(device: torch.device | None = None) -> dict:
    """torch / numpy / python RNG states as tensors and plain types (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, pystate, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(pystate, dtype=torch.int64),
                   "gauss_next": gauss_next},
    }
    if device is not None and torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and device is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))


# ------------------------------------------------------------------------------------------- writing

def _tensors(module: torch.nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v.contiguous().clone()  # clone: safetensors refuses tensors sharing memory
    return out


def _file_meta(meta: dict) -> dict[str, str]:
    return {"format": FORMAT, "version": str(VERSION), "step": str(meta["step"]),
            "config": json.dumps(meta["config"]), "plugins": json.dumps(meta.get("plugins", {})),
            "num_videos": str(meta.get("num_videos", 0))}


def make_meta(cfg: Config, step: int, num_videos: int, detector: str | None = None, **extra) -> dict:
    return {
        "format": FORMAT, "version": VERSION, "step": int(step), "num_videos": int(num_videos),
        "config": to_dict(cfg),
        "plugins": {"detector": detector, "discriminator": cfg.model.discriminator,
                    "perceptual": sorted(cfg.loss.perceptual)},
        **extra,
    }


def _write_folder(final: Path, networks: dict[str, torch.nn.Module], meta: dict,
                  state: dict | None = None, dtype: torch.dtype | None = None) -> Path:
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        meta = dict(meta, networks=sorted(networks), dtype=str(dtype or torch.float32).replace("torch.", ""))
        for name, module in networks.items():
            save_file(_tensors(module, dtype), str(tmp / f"{name}.safetensors"), metadata=_file_meta(meta))
        if state is not None:
            torch.save(state, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it
            old = final.parent / f".old-{final.name}-{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def step_dirname(step: int) -> str:
    return f"step-{int(step):07d}"


def save_checkpoint(ckpt_root: str | Path, step: int, networks: dict[str, torch.nn.Module], meta: dict,
                    state: dict | None = None, keep: int = 0) -> Path:
    """Write ``ckpt_root/step-NNNNNNN/``, point ``ckpt_root/latest`` at it, keep the last ``keep``.

    Args:
        networks: ``{"embedder": E, "generator": G, "discriminator": D[, "generator_ema": G_ema]}``
            (unwrapped modules).
        meta: from :func:`make_meta`.
        state: training state for ``state.pt`` (tensors and plain types only).
        keep: number of step folders to keep (0 keeps all).
    """
    root = Path(ckpt_root)
    path = _write_folder(root / step_dirname(step), networks, meta, state)
    tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    tmp.write_text(path.name + "\n")
    os.replace(tmp, root / LATEST)
    if keep and keep > 0:
        steps = sorted(p for p in root.glob("step-*") if p.is_dir())
        for old in steps[:-keep]:
            if old.name != path.name:
                shutil.rmtree(old, ignore_errors=True)
    return path


def _portable(path: str | Path, parts: int) -> str:
    """The last ``parts`` components of ``path`` (``run/checkpoints/step-0004000``, a dataset's name)."""
    return Path(*Path(path).parts[-parts:]).as_posix()


def export(checkpoint: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float16,
           include_discriminator: bool = False, use_ema: bool = True, pm=None) -> Path:
    """A compact inference checkpoint (no optimiser state) from a run or checkpoint folder.

    The generator written is the EMA one when the run kept it and ``use_ema`` (its weights are
    saved as ``generator``). ``include_discriminator`` keeps D, which few-shot fine-tuning needs
    (section 3.4: ``w'`` starts from ``w0 + e_new``). ``dtype`` applies to floating tensors; the
    loader casts back to float32. Returns the folder.
    """
    ck = load_checkpoint(checkpoint, device="cpu", pm=pm)
    nets = {"embedder": ck.embedder, "generator": ck.inference_generator if use_ema else ck.generator}
    if include_discriminator:
        nets["discriminator"] = ck.discriminator
    # provenance without this machine's folders (an export is made to be handed on): the run, its
    # checkpoint and the dataset's folder by name
    meta = dict(ck.meta, exported_from=_portable(ck.path, 3), export=True)
    if meta.get("dataset"):
        meta["dataset"] = _portable(meta["dataset"], 1)
    meta.pop("networks", None)
    return _write_folder(Path(out_dir), nets, meta, state=None, dtype=dtype)



# ------------------------------------------------------------------------------------------- reading

def resolve(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint folder, a run folder, or a ``checkpoints`` folder."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint or run folder")
    if (p / "meta.json").exists():
        return p
    for root in (p / "checkpoints", p):
        latest = root / LATEST
        if latest.exists():
            target = root / _read_latest(latest)
            if not (target / "meta.json").exists():
                raise CheckpointError(f"{latest} points at {target.name}, which is missing or incomplete; "
                                      f"pass a step folder under {root} instead")
            return target
    raise CheckpointError(f"{p} is neither a checkpoint folder (no meta.json) nor a run folder "
                          "(no checkpoints/latest); pass runs/NNNNN-... or its checkpoints/step-NNNNNNN")


def _read_latest(latest: Path) -> str:
    try:
        name = latest.read_text(encoding="utf-8").strip()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{latest} is unreadable ({type(exc).__name__}); pass a step folder under "
                              f"{latest.parent} instead") from None
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise CheckpointError(f"{latest} does not name a step folder; pass one under {latest.parent} instead")
    return name


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_meta(folder: Path, meta: Any) -> dict:
    """``meta`` (a parsed meta.json) with its type and every field's type checked: a one-line
    :class:`CheckpointError` for a broken or foreign one, never a ``TypeError`` later."""
    broken = "the checkpoint is broken, use an earlier one"
    if not isinstance(meta, dict):
        raise CheckpointError(f"{folder}/meta.json holds a JSON {type(meta).__name__}, not a checkpoint's "
                              f"metadata object; {broken}")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{folder} is not a headpuppet checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{folder} has checkpoint version {meta.get('version')!r}, this headpuppet reads "
                              f"version {VERSION}; use a matching headpuppet release")
    checks = (("step", lambda v: _is_int(v) and v >= 0, "a step number"),
              ("config", lambda v: isinstance(v, dict), "a config mapping"),
              ("num_videos", lambda v: _is_int(v) and v >= 1, "a positive count"),
              ("networks", lambda v: isinstance(v, list) and all(isinstance(n, str) for n in v), "a list of names"),
              ("plugins", lambda v: isinstance(v, dict), "a mapping"),
              ("dataset", lambda v: v is None or isinstance(v, str), "a path"))
    for key, ok, what in checks:
        if key in ("step", "config") and key not in meta:
            raise CheckpointError(f"{folder}/meta.json has no '{key}'; {broken}")
        if key in meta and not ok(meta[key]):
            raise CheckpointError(f"{folder}/meta.json: '{key}' must be {what}, got {meta[key]!r:.60}; {broken}")
    return meta


def read_meta(path: str | Path) -> tuple[Path, dict]:
    """``(checkpoint folder, meta.json)`` with the format, version and field types checked."""
    folder = resolve(path)
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder}/meta.json is unreadable ({type(exc).__name__}); the checkpoint "
                              "is broken, use an earlier one") from None
    return folder, check_meta(folder, meta)


def resume_candidates(path: str | Path) -> list[Path]:
    """Checkpoint folders to resume ``path`` from, best first.

    A checkpoint folder named directly is the only candidate. For a run (or ``checkpoints``)
    folder: the step ``latest`` names, then its other step folders newest first, so a damaged
    latest checkpoint falls back to the previous one.
    """
    p = Path(path)
    if (p / "meta.json").exists():
        return [p]
    for root in (p / "checkpoints", p):
        steps = sorted((q for q in root.glob("step-*") if q.is_dir()), reverse=True) if root.is_dir() else []
        if (root / LATEST).exists() or steps:
            try:
                first = [root / _read_latest(root / LATEST)]
            except CheckpointError:
                first = []
            return list(dict.fromkeys(first + steps))
    return [p]


def _load_into(module: torch.nn.Module, file: Path) -> None:
    if not file.exists():
        raise CheckpointError(f"{file} is missing; the checkpoint is incomplete, use an earlier one")
    try:
        tensors = load_file(str(file))
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise CheckpointError(f"{file} is unreadable ({type(exc).__name__}); the checkpoint is broken") from None
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{file} does not fit the network built from its config "
                              f"({first[1].strip() if len(first) > 1 else first[0]})") from None


def load_networks_into(folder: Path, networks: dict[str, torch.nn.Module | None]) -> None:
    """Load ``folder/<name>.safetensors`` into each given module (skips ``None``)."""
    for name, module in networks.items():
        if module is not None:
            _load_into(module, Path(folder) / f"{name}.safetensors")


def load_state(folder: str | Path) -> dict:
    file = Path(folder) / "state.pt"
    if not file.exists():
        raise CheckpointError(f"{file} is missing; this checkpoint cannot resume training (an export?)")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{file} is unreadable ({type(exc).__name__}); use an earlier checkpoint") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", pm=None,
                    with_state: bool = False) -> Checkpoint:
    """Rebuild the networks of a checkpoint from the config inside it and load their weights.

    Args:
        path: a checkpoint folder (``.../checkpoints/step-0005000``), a run folder (its ``latest``)
            or an exported folder.
        device: where the networks go (float32, eval mode).
        pm: plugin manager for the discriminator plugin (default: a fresh one).
        with_state: also read ``state.pt`` into ``Checkpoint.state``.

    Raises:
        CheckpointError: missing folder/files, another format version, weights not fitting.
    """
    folder, meta = read_meta(path)
    try:
        cfg = from_dict(meta["config"])
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(f"{folder}: its config does not fit this headpuppet ({exc})") from None
    if pm is None:
        pm = make_plugin_manager()
    names = set(meta.get("networks") or [p.stem for p in folder.glob("*.safetensors")])
    # Without a discriminator file (an export) D is built small and dropped: W has a row per
    # training video (145k x 512 floats for VoxCeleb2) that inference never reads.
    nets = build_networks(cfg, int(meta.get("num_videos", 1)) if "discriminator" in names else 1, pm)
    emb, gen, disc = nets.embedder, nets.generator, nets.discriminator
    ema = copy.deepcopy(gen) if "generator_ema" in names else None
    if "discriminator" not in names:
        disc = None
    for required in ("embedder", "generator"):
        if required not in names:
            raise CheckpointError(f"{folder} has no {required}.safetensors; it cannot be used for inference")
    load_networks_into(folder, {"embedder": emb, "generator": gen, "discriminator": disc, "generator_ema": ema})
    device = torch.device(device)
    mods = [m.to(device=device, dtype=torch.float32).eval() if m is not None else None
            for m in (emb, gen, disc, ema)]
    state = load_state(folder) if with_state else None
    return Checkpoint(cfg, mods[0], mods[1], mods[2], mods[3], int(meta["step"]), meta, folder, state)
