"""A source person ready to render, and the *person folder* that stores a fine-tuned one.

Zakharov et al. 2019, section 3.3: the embedder maps the K shots of a new person to ``e_new``, and
the generator's AdaIN parameters ``psi = P e_new`` are computed once and kept in a :class:`Person`.
Section 3.4 (few-shot fine-tuning, :mod:`headpuppet.fewshot.finetune`) gives a :class:`Person` with
its own G/D weights, ``psi'`` and ``w'``, saved as a person folder that ``animate`` takes as SOURCE.

Person folder (``headpuppet fine-tune`` output)::

    meta.json                 {"format": "headpuppet-person", "version": 1, "config": {...}, ...} (written last)
    generator.safetensors     fine-tuned G
    discriminator.safetensors fine-tuned D
    person.safetensors        psi (1, P), e (1, N), w (1, N), points (K, 68, 2)[, iris (K, 2, 3)]
    frames/000.png ...        the K source crops (S x S)
    image.png                 the full first source image (for --paste-back)

:func:`write_person_dir` writes one, :func:`read_person_dir` reads one back (the
:class:`~headpuppet.fewshot.animator.Animator` wraps both), :func:`is_person_dir` recognises one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..config import Config, from_dict, to_dict
from ..errors import CheckpointError, HeadpuppetError
from ..media.crop import CropBox
from ..media.imaging import read_image, write_image
from ..models import build_networks

PERSON_FORMAT = "headpuppet-person"
PERSON_VERSION = 1



@dataclass
class Person:
    """A source person, ready to render: crops, landmarks and the cached AdaIN parameters.

    Attributes:
        frames: ``(K, S, S, 3) uint8`` the K source crops.
        points: ``(K, 68, 2) float32`` their landmarks in crop pixels.
        iris: ``(K, 2, 3) float32`` or None.
        e: ``(1, N)`` embedding (mean over K).
        psi: ``(1, P)`` AdaIN parameters ``P e`` (or the fine-tuned ``psi'``).
        w: ``(1, N)`` discriminator projection vector ``w0 + e`` (or the fine-tuned ``w'``); None
            when no discriminator was loaded.
        image: the full first source image ``(H, W, 3)`` (for paste-back), or None.
        box: the crop box of the first shot in ``image`` (a :class:`headpuppet.media.crop.CropBox`).
        labels: where each shot came from.
        faces_found: faces detected in each shot (the largest was used).
        generator / discriminator: fine-tuned networks; None means the animator's own.
        finetune_steps: fine-tuning steps applied.
    """

    frames: np.ndarray
    points: np.ndarray
    iris: np.ndarray | None
    e: torch.Tensor
    psi: torch.Tensor
    w: torch.Tensor | None = None
    image: np.ndarray | None = None
    box: Any = None
    labels: list[str] = field(default_factory=list)
    faces_found: list[int] = field(default_factory=list)
    generator: torch.nn.Module | None = None
    discriminator: torch.nn.Module | None = None
    finetune_steps: int = 0

    @property
    def num_shots(self) -> int:
        return len(self.frames)

    def several_faces(self) -> list[tuple[str, int]]:
        """``(label, faces)`` for every shot where more than one face was found."""
        return [(lab, n) for lab, n in zip(self.labels, self.faces_found) if n > 1]



def is_person_dir(path: str | Path) -> bool:
    """True when ``path`` is a fine-tuned person folder (``headpuppet fine-tune`` output)."""
    meta = Path(path) / "meta.json"
    if not meta.is_file():
        return False
    if (Path(path) / "person.safetensors").is_file():
        return True  # even with a damaged meta.json: loading it then says the folder is broken
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == PERSON_FORMAT


# ---------------------------------------------------------------------- writing
def write_person_dir(person: Person, out_dir: str | Path, *, cfg: Config, generator: torch.nn.Module,
                     discriminator: torch.nn.Module | None, detector: str, base_checkpoint: str,
                     extra: dict | None = None) -> Path:
    """Write ``person`` as a person folder; ``meta.json`` last, so a half-written folder is never taken.

    Args:
        cfg: the config the networks were built with (stored: the folder alone is enough to animate).
        generator, discriminator: the networks to store when the person has no fine-tuned ones of
            its own (``person.generator`` / ``person.discriminator`` win when set).
        detector: the landmark detector plugin the model was trained with.
        base_checkpoint: where the base model came from (recorded in ``meta.json``).
        extra: more ``meta.json`` entries.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)  # incomplete until rewritten last
    gen = person.generator if person.generator is not None else generator
    disc = person.discriminator if person.discriminator is not None else discriminator
    save_file(_state(gen), str(out / "generator.safetensors"))
    if disc is not None:
        save_file(_person_disc_state(disc), str(out / "discriminator.safetensors"))
    tensors = {"psi": person.psi, "e": person.e, "points": torch.from_numpy(np.asarray(person.points, np.float32))}
    if person.w is not None:
        tensors["w"] = person.w
    if person.iris is not None:
        tensors["iris"] = torch.from_numpy(np.asarray(person.iris, np.float32))
    save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(out / "person.safetensors"))
    (out / "frames").mkdir(exist_ok=True)
    for old in (out / "frames").glob("*.png"):
        old.unlink()
    for i, f in enumerate(person.frames):
        write_image(out / "frames" / f"{i:03d}.png", f)
    if person.image is not None:
        write_image(out / "image.png", person.image)
    meta = {
        "format": PERSON_FORMAT, "version": PERSON_VERSION, "config": to_dict(cfg),
        "detector": detector, "has_iris": person.iris is not None,
        "num_shots": person.num_shots, "labels": person.labels, "faces_found": person.faces_found,
        "box": person.box.as_list() if person.box is not None else None,
        "finetune_steps": person.finetune_steps, "num_videos": 1,
        "base_checkpoint": base_checkpoint, **(extra or {}),
    }
    tmp = out / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, out / "meta.json")
    return out


# ---------------------------------------------------------------------- reading
@dataclass
class PersonFolder:
    """A person folder read back: the networks to build an animator around, and the person."""

    cfg: Config
    meta: dict
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    person: Person                     # its tensors on the device given to read_person_dir


def read_person_dir(path: str | Path, pm, device: str | torch.device = "cpu") -> PersonFolder:
    """Read a person folder written by :func:`write_person_dir` (networks on the CPU, the person's
    tensors on ``device``). A folder that is not one, or is broken, raises :class:`CheckpointError`
    saying to run ``headpuppet fine-tune`` again."""
    path = Path(path)
    meta = _read_person_meta(path)
    try:
        cfg = from_dict(meta["config"])
    except HeadpuppetError as exc:
        raise CheckpointError(f"{path}: the person folder's config does not fit ({exc})") from None
    nets = build_networks(cfg, int(meta.get("num_videos", 1)), pm)
    try:
        nets.generator.load_state_dict(load_file(str(path / "generator.safetensors")))
        if (path / "discriminator.safetensors").exists():
            nets.discriminator.load_state_dict(load_file(str(path / "discriminator.safetensors")))
        tensors = load_file(str(path / "person.safetensors"))
        missing = [k for k in ("points", "e", "psi") if k not in tensors]
        if missing:
            raise ValueError(f"person.safetensors has no {missing[0]}")
    except Exception as exc:  # truncated or foreign safetensors raise their own error types
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(f"{path}: the person folder is broken ({why}); "
                              f"run `headpuppet fine-tune` again") from None
    frame_files = sorted((path / "frames").glob("*.png"))
    frames = np.stack([read_image(f) for f in frame_files]) if frame_files else \
        np.zeros((len(tensors["points"]), cfg.model.image_size, cfg.model.image_size, 3), np.uint8)
    dev = torch.device(device)
    person = Person(
        frames=frames, points=tensors["points"].numpy(),
        iris=tensors["iris"].numpy() if "iris" in tensors else None,
        e=tensors["e"].to(dev), psi=tensors["psi"].to(dev),
        w=tensors["w"].to(dev) if "w" in tensors else None,
        image=read_image(path / "image.png") if (path / "image.png").exists() else None,
        box=CropBox.from_list(meta["box"]) if meta.get("box") else None,
        labels=list(meta.get("labels", [])), faces_found=list(meta.get("faces_found", [])),
        generator=None, discriminator=None, finetune_steps=int(meta.get("finetune_steps", 0)),
    )
    return PersonFolder(cfg, meta, nets.generator, nets.discriminator, person)


def _read_person_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"{path}: not a person folder (no readable meta.json); "
                              f"make one with `headpuppet fine-tune`") from None
    if not isinstance(meta, dict) or meta.get("format") != PERSON_FORMAT:
        raise CheckpointError(f"{path}: not a person folder written by `headpuppet fine-tune`")
    num = (int, float)
    types = {"version": int, "config": dict, "num_videos": int, "finetune_steps": int, "detector": str,
             "labels": list, "faces_found": list, "box": (list, type(None))}
    for key, tp in types.items():
        if key in meta and (not isinstance(meta[key], tp) or isinstance(meta[key], bool)):
            raise CheckpointError(f"{path}/meta.json: '{key}' has the wrong type ({type(meta[key]).__name__}); "
                                  f"the person folder is broken, run `headpuppet fine-tune` again")
    if "config" not in meta or (meta.get("box") and (len(meta["box"]) != 3
                                                     or not all(isinstance(v, num) for v in meta["box"]))):
        raise CheckpointError(f"{path}/meta.json has no config or a bad box; the person folder is broken, "
                              f"run `headpuppet fine-tune` again")
    if meta.get("version", 0) > PERSON_VERSION:
        raise CheckpointError(f"{path}: person folder version {meta.get('version')} is newer than this "
                              f"headpuppet understands; upgrade headpuppet")
    return meta


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share memory
    return {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}


def _person_disc_state(disc: torch.nn.Module) -> dict[str, torch.Tensor]:
    """D's weights with ``W`` cut to one row: a person uses its own ``w'``, and the meta-learning
    rows (one per training video, 145k x 512 for VoxCeleb2) do not belong in a person folder."""
    state = _state(disc)
    W = getattr(disc, "W", None)
    if isinstance(W, torch.Tensor):
        for name, p in disc.named_parameters():
            if p is W:
                state[name] = state[name][:1].clone()
    return state

