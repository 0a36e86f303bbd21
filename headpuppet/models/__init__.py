"""The networks of Zakharov et al. 2019 (section 3.2): embedder E, generator G (with P), discriminator D.

``build_networks(cfg, num_videos, pm)`` builds all three from a :class:`headpuppet.config.Config`;
the discriminator comes from the plugin registry by ``cfg.model.discriminator`` ("projection" is the
paper's, "multiscale" a variant), so a third-party plugin can supply its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..plugins import make_plugin_manager, registry
from .blocks import check_model_config
from .discriminator import MultiScaleDiscriminator, ProjectionDiscriminator
from .embedder import Embedder
from .generator import Generator
from .warp_generator import WarpGenerator

__all__ = [
    "Networks", "build_networks", "count_parameters", "Embedder", "Generator",
    "ProjectionDiscriminator", "MultiScaleDiscriminator", "check_model_config", "WarpGenerator",
]


@dataclass
class Networks:
    """The three networks of one model. Saved one file per network (``embedder``, ``generator``,
    ``discriminator``), so each is a plain ``nn.Module`` attribute."""

    embedder: Embedder
    generator: Generator
    discriminator: nn.Module

    def items(self) -> Iterator[tuple[str, nn.Module]]:
        yield "embedder", self.embedder
        yield "generator", self.generator
        yield "discriminator", self.discriminator

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Networks":
        for _, m in self.items():
            m.to(device=device, dtype=dtype)
        return self

    def train(self, mode: bool = True) -> "Networks":
        for _, m in self.items():
            m.train(mode)
        return self

    def eval(self) -> "Networks":
        return self.train(False)


def build_networks(cfg, num_videos: int, pm=None, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> Networks:
    """Build E, G and D for ``cfg`` (a :class:`headpuppet.config.Config`).

    Args:
        cfg: the resolved config; ``cfg.model`` sizes the networks.
        num_videos: rows of the discriminator's ``W`` (videos in the meta-learning dataset).
        pm: plugin manager whose registry provides ``cfg.model.discriminator``; a fresh
            :func:`headpuppet.plugins.make_plugin_manager` when None.
        device, dtype: where the parameters live (float32 by default).
    """
    mcfg = cfg.model
    check_model_config(mcfg)
    if pm is None:
        pm = make_plugin_manager()
    discriminator = registry(pm, "discriminator").create(mcfg.discriminator, mcfg, num_videos)
    embedder = Embedder(mcfg)  # E before G: the order of random initialisation is part of a seeded run
    generator = WarpGenerator(mcfg) if getattr(mcfg, "generator", "paper") == "warp" else Generator(mcfg)
    nets = Networks(embedder, generator, discriminator)
    return nets.to(device=device, dtype=dtype)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements of ``module`` (spectral norm's u/v vectors are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
