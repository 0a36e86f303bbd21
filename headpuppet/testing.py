"""Helpers for testing headpuppet and plugins written for it: tiny data, configs and checkpoints made
on the fly, fake landmark detectors, and CLI output helpers.

Everything here is small enough for seeded CPU tests (32 px images, a few channels, K = 2) and needs
no downloaded weights or media: the dataset is cut from scikit-image's astronaut (a real face photo
that ships with scikit-image) and the perceptual loss is the weight-free ``laplacian-pyramid``.

A perceptual-loss plugin's test might read::

    from headpuppet.testing import make_dataset, tiny_config
    from headpuppet.training import meta_train

    def test_my_loss_trains(tmp_path):
        cfg = tiny_config(steps=2)
        cfg.loss.perceptual = {"my-net": 1.0}         # the name the plugin registers
        run = meta_train(cfg, make_dataset(tmp_path / "ds"), out_root=tmp_path, device="cpu")
        assert (run / "checkpoints" / "latest").exists()

Nothing here is imported by headpuppet itself; ``pytest`` is needed only by :func:`shared_file` and
:func:`mediapipe_or_skip` (they skip the calling test).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from skimage import data

from . import hookimpl
from .config import Config, load_config
from .data.format import PendingVideo, write_dataset_json
from .models import build_networks
from .plugins import make_plugin_manager, registry
from .protocols import Face
from .training.checkpoint import make_meta, save_checkpoint

__all__ = ["FACES", "strip_ansi", "shared_file", "TINY_SIZE", "tiny_config", "make_dataset",
           "template68", "TINY_CHECKPOINT", "checkpoint_config", "make_checkpoint", "TwoFaces",
           "CentreDetector", "FakeDetectorPlugin", "make_pm", "mediapipe_or_skip"]

#: Real face media (``videos/``, ``photos/``) used by the tests where present: ``$HEADPUPPET_FACES``,
#: else ``../shared/data/faces`` next to the repository.
FACES = Path(os.environ.get("HEADPUPPET_FACES", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"))

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# ------------------------------------------------------------------------------------------ output


def strip_ansi(text: str) -> str:
    """``text`` without terminal colour codes (Rich colours CLI output; assert on the plain words)."""
    return _ANSI.sub("", text)


def shared_file(rel: str) -> Path:
    """``FACES / rel``, or skip the calling test saying the shared face media is absent."""
    path = FACES / rel
    if not path.exists():
        import pytest  # optional dependency (dev extra)

        pytest.skip(f"shared face media not found: {path} (set HEADPUPPET_FACES to its folder)")
    return path


# -------------------------------------------------------------------------------- a tiny dataset

#: Side of the frames of :func:`make_dataset` and of the model of :func:`tiny_config`.
TINY_SIZE = 32


def template68() -> np.ndarray:
    """A 68-point face (iBUG order) in the astronaut's 200 px crop at (130, 30), in units of the
    crop side: ``(68, 2) float32``."""
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([0.475 - 0.25 * np.cos(t), 0.38 + 0.37 * np.sin(t)], 1)
    rb = np.stack([np.linspace(0.27, 0.43, 5), 0.29 - 0.02 * np.sin(np.linspace(0, np.pi, 5))], 1)
    lb = rb + [0.25, 0.0]
    bridge = np.stack([np.full(4, 0.475), np.linspace(0.37, 0.48, 4)], 1)
    nostrils = np.stack([np.linspace(0.43, 0.52, 5), np.full(5, 0.51)], 1)
    a6 = np.linspace(0, 2 * np.pi, 7)[:-1]
    eye = np.stack([-0.05 * np.cos(a6), -0.018 * np.sin(a6)], 1)
    a12 = np.linspace(0, 2 * np.pi, 13)[:-1]
    outer = np.stack([0.47 - 0.08 * np.cos(a12), 0.575 - 0.03 * np.sin(a12)], 1)
    a8 = np.linspace(0, 2 * np.pi, 9)[:-1]
    inner = np.stack([0.47 - 0.055 * np.cos(a8), 0.575 - 0.012 * np.sin(a8)], 1)
    pts = np.concatenate([jaw, rb, lb, bridge, nostrils, eye + [0.36, 0.36], eye + [0.59, 0.36], outer, inner])
    assert pts.shape == (68, 2)
    return pts.astype(np.float32)


def make_dataset(root: Path, videos: int = 3, frames: int = 5, size: int = TINY_SIZE, seed: int = 0) -> Path:
    """Write a dataset in the documented on-disk format at ``root`` and return ``root``.

    ``videos`` clips of ``frames`` jittered (rotated, scaled, shifted) crops of the astronaut, every
    other clip mirrored and each tinted a little differently, with :func:`template68` moved by the
    same jitter as landmarks. Detector name ``"template"``, no irises. Deterministic in ``seed``.
    """
    image = data.astronaut()
    write_dataset_json(root, size=size, detector="template", has_iris=False)
    base = np.array([130.0, 30.0]) + template68() * 200.0  # full-image pixels
    centre = np.array([230.0, 130.0])
    rng = np.random.default_rng(seed)
    for v in range(videos):
        pv = PendingVideo(root, f"astro{v}", size)
        src = image[:, ::-1].copy() if v % 2 else image
        pts_src = base.copy()
        if v % 2:
            pts_src[:, 0] = image.shape[1] - 1 - pts_src[:, 0]
            c = np.array([image.shape[1] - 1 - centre[0], centre[1]])
        else:
            c = centre
        lms = []
        for _ in range(frames):
            ang = rng.uniform(-6, 6)
            scale = size / 200.0 * rng.uniform(0.94, 1.06)
            M = cv2.getRotationMatrix2D((float(c[0]), float(c[1])), ang, scale)
            M[:, 2] += np.array([size / 2, size / 2]) - c + rng.uniform(-1.5, 1.5, 2)
            crop = cv2.warpAffine(src, M, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
            tint = np.clip(crop.astype(np.float32) * (1 + 0.05 * v), 0, 255).astype(np.uint8)
            pv.add_frame(tint)
            lms.append(pts_src @ M[:, :2].T + M[:, 2])
        pv.finish(np.asarray(lms, np.float32), None, {"source": "skimage.astronaut", "person": f"astro{v}",
                                                      "fps": 25.0, "frame_indices": list(range(frames)),
                                                      "crop": [0, 0, 512]})
    return root


def tiny_config(**train: Any) -> Config:
    """A meta-training config for :func:`make_dataset` (32 px, 8-16 channels, K = 2, batch 2, 4
    steps, the weight-free ``laplacian-pyramid`` perceptual loss, no workers, no samples or
    checkpoints on the way); ``train`` overrides ``train.*`` keys, e.g. ``tiny_config(steps=2)``."""
    overrides = {
        "preset": "tiny",
        "model": {"image_size": TINY_SIZE, "ch": 8, "max_ch": 16, "emb_dim": 16, "gen_bottleneck": 8,
                  "gen_res_blocks": 1, "attention_down": [16], "attention_up": [16]},
        "loss": {"perceptual": {"laplacian-pyramid": 1.0}, "perceptual_layers": {}},
        "train": {"steps": 4, "batch_size": 2, "k_shots": 2, "num_workers": 0, "log_every": 1,
                  "sample_every": 0, "checkpoint_every": 0, "keep_checkpoints": 2, **train},
    }
    return load_config(overrides=overrides)


# ----------------------------------------------------------------------------- a tiny checkpoint

#: Config keys of :func:`make_checkpoint`'s model: smaller still (4-8 channels, no attention).
TINY_CHECKPOINT = {
    "model": {"image_size": 32, "ch": 4, "max_ch": 8, "emb_dim": 8, "gen_bottleneck": 8, "gen_res_blocks": 1,
              "attention_down": [], "attention_up": [], "discriminator": "projection"},
    "loss": {"perceptual": {"laplacian-pyramid": 1.0}, "perceptual_layers": {}},
    "finetune": {"steps": 2, "batch_size": 2, "preview_every": 1},
}


def checkpoint_config(**model: Any) -> Config:
    """The config of :func:`make_checkpoint`; ``model`` overrides ``model.*`` keys (e.g. ``generator="warp"``)."""
    over = {k: dict(v) for k, v in TINY_CHECKPOINT.items()}
    over["model"].update(model)
    return load_config(overrides=over)


def make_checkpoint(root: Path, seed: int = 0, detector: str = "mediapipe", **model: Any) -> Path:
    """A tiny checkpoint of randomly initialised networks (seeded), written by the training
    checkpoint module at ``root/checkpoints/step-0000010``; returns that folder. ``detector`` is
    recorded as the landmark detector of its (imaginary) training data; ``model`` as in
    :func:`checkpoint_config`."""
    cfg = checkpoint_config(**model)
    torch.manual_seed(seed)
    nets = build_networks(cfg, 3, make_plugin_manager())
    return save_checkpoint(Path(root) / "checkpoints", 10, dict(nets.items()), make_meta(cfg, 10, 3, detector=detector))


# -------------------------------------------------------------------------------- fake detectors


class TwoFaces:
    """A detector (``two-faces``) that finds a small and a large synthetic face (ellipses of 68
    points) in any frame that is not dark (mean < 10 finds none). The small one is listed first,
    on purpose: callers must choose by area, not by order."""

    name = "two-faces"
    has_iris = False

    def __init__(self, **_: Any):
        pass

    def reset(self) -> None:
        pass

    def detect(self, frame: np.ndarray) -> list[Face]:
        if frame.mean() < 10:
            return []
        h, w = frame.shape[:2]
        ang = np.linspace(0, 2 * np.pi, 69)[:-1]
        unit = np.stack([np.cos(ang), np.sin(ang) * 1.2], 1)
        big = Face(unit * w * 0.2 + [w * 0.6, h * 0.5])
        small = Face(unit * w * 0.05 + [w * 0.15, h * 0.2])
        return [small, big]


def _ring(cx: float, cy: float, r: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([cx + r * np.cos(t), cy + 1.2 * r * np.sin(t)], axis=1).astype(np.float32)


class CentreDetector:
    """A detector (``centre``) that finds a 'face' (a ring of 68 points) in the middle of every frame
    that is not dark, with irises, plus a smaller one listed first; counts its ``reset`` calls."""

    name = "centre"
    has_iris = True

    def __init__(self, **_: Any):
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1

    def detect(self, frame: np.ndarray) -> list[Face]:
        if frame.mean() < 10:
            return []
        h, w = frame.shape[:2]
        r = 0.2 * min(h, w)
        small = Face(_ring(w * 0.2, h * 0.2, r * 0.3))  # a smaller face, listed first on purpose
        big = Face(_ring(w / 2, h / 2, r), iris=np.array([[w / 2 - r / 3, h / 2, 2], [w / 2 + r / 3, h / 2, 2]]))
        return [small, big]


class FakeDetectorPlugin:
    """A plugin object registering landmark detectors by name, e.g.
    ``FakeDetectorPlugin(centre=CentreDetector)``; pass it to ``make_plugin_manager(extra_plugins=
    [("fake", plugin)])``. It pickles (by reference to its classes), so ``preprocess --workers``
    processes can rebuild it."""

    def __init__(self, **detectors: Any):
        self.detectors = detectors

    @hookimpl
    def register_landmark_detectors(self, register):
        for name, factory in self.detectors.items():
            register(name, factory)


def make_pm(load_entrypoints: bool = True):
    """A plugin manager with the installed plugins plus ``two-faces`` (:class:`TwoFaces`, from the
    plugin ``test-fake-detector``)."""
    return make_plugin_manager(load_entrypoints=load_entrypoints,
                               extra_plugins=[("test-fake-detector", FakeDetectorPlugin(**{"two-faces": TwoFaces}))])


def mediapipe_or_skip(pm):
    """The ``mediapipe`` detector from ``pm``, or skip the calling test when it is not available."""
    reg = registry(pm, "landmarks")
    if "mediapipe" not in reg or reg["mediapipe"].unavailable:
        import pytest  # optional dependency (dev extra)

        pytest.skip("the mediapipe detector plugin is not available")
    return reg.create("mediapipe")
