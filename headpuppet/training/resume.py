"""Resuming a meta-learning run: which checkpoint, which config, and restoring its state.

A run or checkpoint folder names a list of candidates (:func:`headpuppet.training.checkpoint.resume_candidates`,
latest first); the first readable one is resumed, and a damaged one falls back to the previous,
said in one line. The model must be the checkpoint's; loss weights and train settings may change
(a curriculum), each change listed by :func:`setting_changes`. Restoring brings back weights,
optimisers, EMA and, on one process, the RNG states, so N + M steps with a resume in between equal
N + M straight steps bit for bit; with several ranks each rank's RNG is re-derived from
``(seed, step, rank)``.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import numpy as np
import torch

from ..config import Config, from_dict, to_dict
from ..errors import CheckpointError, ConfigError
from . import checkpoint as ckpt
from .guards import reason

__all__ = ["pick_checkpoint", "resume_config", "setting_changes", "restore", "restore_with_fallback",
           "seed_all"]


def seed_all(seed: int) -> None:
    """Seed torch, numpy and python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def pick_checkpoint(resume) -> tuple[list[Path], Path, dict, str | None]:
    """``(candidates, folder, meta, note)``: the first readable checkpoint of
    :func:`ckpt.resume_candidates` and its metadata. ``note`` (or ``None``) says in one line which
    damaged checkpoints were passed over; when none is readable, the first one's error is raised."""
    candidates = ckpt.resume_candidates(resume)
    errors: list[tuple[Path, CheckpointError]] = []
    for folder in candidates:
        try:
            found, meta = ckpt.read_meta(folder)
        except CheckpointError as exc:
            errors.append((folder, exc))
            continue
        note = None
        if errors:
            bad, exc = errors[0]
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            note = f"{bad.name}{more} cannot be resumed ({reason(exc)}); resuming from {found.name} instead"
        return candidates, found, meta, note
    raise errors[0][1]


def resume_config(cfg: Config | None, saved: Config) -> Config:
    """The config to continue with. The model must be the checkpoint's; loss weights and train
    settings may change (a curriculum: e.g. an identity term added after the first steps), each
    change listed by :func:`setting_changes`, reported and written to the run's ``changes.jsonl``."""
    if cfg is None:
        return saved
    a, b = to_dict(cfg.model), to_dict(saved.model)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        raise CheckpointError(f"model.{diff[0]} differs from the checkpoint's ({b.get(diff[0])!r}); "
                              "drop that setting to resume, or start a new run")
    cfg = copy.deepcopy(cfg)
    cfg.preset = saved.preset
    return cfg


def setting_changes(cfg: Config, saved: Config) -> list[str]:
    """``"section.key: old -> new"`` for every loss and train setting (but the step count) that
    differs from the checkpoint's."""
    out = []
    for section in ("loss", "train"):
        a, b = to_dict(getattr(cfg, section)), to_dict(getattr(saved, section))
        out += [f"{section}.{k}: {b.get(k)!r} -> {a.get(k)!r}" for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k) and (section, k) != ("train", "steps")]  # extending a run is routine
    return out


def restore(trainer, folder: Path) -> None:
    """Load ``folder``'s weights, optimisers and step into ``trainer`` (a ``MetaTrainer``), and its
    RNG states (one process) or RNG seeds derived from ``(seed, step, rank)`` (several)."""
    has_ema = (folder / "generator_ema.safetensors").exists()
    ckpt.load_networks_into(folder, {"embedder": trainer.raw.embedder, "generator": trainer.raw.generator,
                                     "discriminator": trainer.raw.discriminator,
                                     "generator_ema": trainer.ema if has_ema else None})
    if trainer.ema is not None and not has_ema:
        trainer.ema.load_state_dict(trainer.raw.generator.state_dict())  # EMA newly switched on
    state = ckpt.load_state(folder)
    try:
        trainer.opt_g.load_state_dict(state["opt_g"])
        trainer.opt_d.load_state_dict(state["opt_d"])
        int(state["step"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder}/state.pt does not fit this run ({type(exc).__name__}); "
                              "the checkpoint is broken") from None
    tc = trainer.cfg.train
    for opt, lr in ((trainer.opt_g, tc.lr_g), (trainer.opt_d, tc.lr_d)):
        for group in opt.param_groups:  # the config may change the learning rates on resume
            group["lr"] = lr
            group["betas"] = tuple(tc.betas)
    trainer.step = int(state["step"])
    if trainer.dist.world_size == 1 and int(state.get("world_size", 1)) == 1:
        ckpt.set_rng_state(state["rng"], trainer.device)
    else:
        seed_all(tc.seed + 1_000_003 * trainer.step + trainer.dist.rank)


def restore_with_fallback(trainer, candidates: list[Path]) -> None:
    """:func:`restore` ``trainer.resume_folder``; a damaged one falls back to the next of
    ``candidates`` with the same model and dataset (``trainer.resume_folder`` updated), said in one line."""
    later = candidates[candidates.index(trainer.resume_folder) + 1:] if trainer.resume_folder in candidates else []
    while True:
        try:
            return restore(trainer, trainer.resume_folder)
        except CheckpointError as exc:
            nxt = None
            while later and nxt is None:
                cand = later.pop(0)
                try:
                    _, meta = ckpt.read_meta(cand)
                    resume_config(trainer.cfg, from_dict(meta["config"]))
                except (CheckpointError, ConfigError):
                    continue
                if int(meta.get("num_videos", -1)) == trainer.data.num_videos:
                    nxt = cand
            if nxt is None:
                raise
            trainer.reporter.warn(f"{trainer.resume_folder.name} is damaged ({reason(exc)}); "
                                  f"resuming from {nxt.name} instead")
            trainer.resume_folder = nxt
