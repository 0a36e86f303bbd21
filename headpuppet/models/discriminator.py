"""The projection discriminator D (Zakharov et al. 2019, sections 3.2 and 4) and a multi-scale variant.

``V(x, y)`` is the convolutional part: BigGAN residual down-sampling blocks without normalisation
on the frame and its landmark image concatenated (6 channels), from the image size down to 4x4,
self-attention at 32x32, one extra residual block at 4x4 (section 4: "compared to the embedder, has
an additional residual block at the end"), global sum pooling and ReLU -> ``(B, N)``.

The realism score follows the projection discriminator (Miyato & Koyama 2018), eq. 3:

    r(x, y, i) = V(x, y)^T (W_i + w0) + b

with ``W`` the ``(num_videos, N)`` matrix of per-video vectors (matched to the embeddings by
L_MCH), ``w0`` shared and ``b`` a bias. Fine-tuning (section 3.4) replaces ``W_i + w0`` by a
single trained vector ``w'`` (initialised to ``w0 + e_new``), passed as ``w``.

The features returned for the feature-matching loss are the activations after each residual
block (section 4: "we use activations after each residual block of the discriminator network").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DownPath, ResBlockDown, avg_pool2, check_model_config


class _ProjectionHead(nn.Module):
    """``W`` (num_videos, N), ``w0`` (N,), ``b`` (1,) and the projection score."""

    def __init__(self, num_videos: int, emb_dim: int):
        super().__init__()
        if num_videos < 1:
            raise ValueError(f"the discriminator needs num_videos >= 1, got {num_videos}")
        self.num_videos = num_videos
        self.emb_dim = emb_dim
        # W ~ U[0, 1): on the scale of the embeddings and, like them, non-negative (E ends in a
        # ReLU). L_MCH (weight 80) pulls each e_i towards W_i; with a small W (e.g. N(0, 0.02)) that
        # pull drags every e to ~0 within a few hundred steps, E's final ReLU goes dead and G learns
        # to ignore identity (seen here: e == 0 for every input at step 750). The paper does not
        # state W's initialisation; public re-implementations use torch.rand as well.
        self.W = nn.Parameter(torch.rand(num_videos, emb_dim))
        self.w0 = nn.Parameter(torch.zeros(emb_dim))
        self.b = nn.Parameter(torch.zeros(1))

    def projection_vector(self, batch: int, video_idx: torch.Tensor | None, w: torch.Tensor | None) -> torch.Tensor:
        """``W[video_idx] + w0``, or ``w`` when given: ``(B, N)``."""
        if w is not None:
            if w.shape != (batch, self.emb_dim):
                raise ValueError(f"w must be {(batch, self.emb_dim)}, got {tuple(w.shape)}")
            return w
        if video_idx is None:
            raise ValueError("the discriminator needs video_idx (meta-learning) or w (fine-tuning)")
        video_idx = torch.as_tensor(video_idx, device=self.W.device).long().reshape(-1)
        if video_idx.shape[0] != batch:
            raise ValueError(f"video_idx must have one index per sample ({batch}), got {video_idx.shape[0]}")
        return self.W[video_idx] + self.w0                        # (B, N)

    def score(self, v: torch.Tensor, proj: torch.Tensor) -> torch.Tensor:
        return (v * proj).sum(dim=1) + self.b                     # (B,)


class ProjectionDiscriminator(nn.Module):
    """The paper's discriminator; see the module docstring.

    Args:
        mcfg: :class:`headpuppet.config.ModelConfig` (image_size, ch, max_ch, emb_dim,
            attention_down, spectral_norm).
        num_videos: rows of ``W`` (videos of the meta-learning dataset).
    """

    def __init__(self, mcfg, num_videos: int):
        super().__init__()
        check_model_config(mcfg)
        self.image_size = mcfg.image_size
        self.emb_dim = mcfg.emb_dim
        self.V = _ConvPart(mcfg, mcfg.image_size)
        self.head = _ProjectionHead(num_videos, mcfg.emb_dim)

    # the hookspec promises W, w0 and b as attributes of the discriminator
    @property
    def W(self) -> nn.Parameter:
        return self.head.W

    @property
    def w0(self) -> nn.Parameter:
        return self.head.w0

    @property
    def b(self) -> nn.Parameter:
        return self.head.b

    @property
    def num_videos(self) -> int:
        return self.head.num_videos

    def forward(self, x: torch.Tensor, y: torch.Tensor, video_idx: torch.Tensor | None = None,
                w: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Score frames ``x`` against landmark images ``y``.

        Args:
            x, y: ``(B, 3, H, W)`` in [-1, 1].
            video_idx: ``(B,)`` long, rows of ``W`` (meta-learning).
            w: ``(B, N)`` projection vectors replacing ``W[video_idx] + w0`` (fine-tuning's w').

        Returns:
            ``(score (B,), features)``: realism scores and the activation after each residual block.
        """
        v, feats = self.V(x, y)                                  # (B, N)
        proj = self.head.projection_vector(x.shape[0], video_idx, w)
        return self.head.score(v, proj), feats


class _ConvPart(nn.Module):
    """V: down-sampling blocks to 4x4, one extra block at 4x4, sum pooling and ReLU."""

    def __init__(self, mcfg, image_size: int):
        super().__init__()
        sn = mcfg.spectral_norm
        self.path = DownPath(6, image_size, 4, mcfg.ch, mcfg.max_ch, mcfg.attention_down,
                             sn=sn, norm=False, last_ch=mcfg.emb_dim)
        self.extra = ResBlockDown(mcfg.emb_dim, mcfg.emb_dim, sn=sn, downsample=False)
        self.pool = getattr(mcfg, "disc_pool", "sum-relu")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"the discriminator needs x and y of the same shape (B, 3, H, W); "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        feats = self.path(torch.cat([x, y], dim=1))
        h = self.extra(feats[-1])                                # (B, N, 4, 4)
        feats.append(h)
        return pool_features(h, self.pool), feats                # (B, N)


def pool_features(h: torch.Tensor, mode: str = "sum-relu") -> torch.Tensor:
    """``(B, N, H, W)`` -> ``(B, N)``: V of the projection discriminator.

    ``"sum-relu"`` is the paper's (sum pooling, then ReLU). Its failure mode, seen in both CPU-trained
    demo models: once the hinge loss has pushed every channel's pooled sum below zero, V is 0 for
    every input, the score is the constant ``b`` and no gradient ever reaches the convolutions again.
    ``"relu-sum"`` (BigGAN's order) keeps a gradient wherever any single position is positive."""
    if mode == "relu-sum":
        return F.relu(h).sum(dim=(2, 3))
    return F.relu(h.sum(dim=(2, 3)))


class MultiScaleDiscriminator(nn.Module):
    """The projection discriminator applied at ``mcfg.disc_scales`` image scales (not in the paper).

    Scale ``s`` sees ``(x, y)`` average-pooled by ``2**s`` and has its own convolutional part V_s
    (self-attention where its path passes through ``attention_down``). All scales share one
    ``W``, ``w0`` and ``b``: a video keeps a single projection vector, so L_MCH (``e_i ~ W_i``) and
    fine-tuning's ``w' = w0 + e_new`` mean exactly what they mean for the paper's discriminator.
    The score is the mean of the per-scale scores (each ``V_s^T (W_i + w0) + b``, so the result
    has the same bias ``b``); the features are those of every scale, full scale first.

    Args:
        mcfg: :class:`headpuppet.config.ModelConfig` (as for the projection discriminator, plus
            disc_scales).
        num_videos: rows of ``W``.
    """

    def __init__(self, mcfg, num_videos: int):
        super().__init__()
        check_model_config(mcfg)
        self.image_size = mcfg.image_size
        self.emb_dim = mcfg.emb_dim
        self.scales = mcfg.disc_scales
        self.Vs = nn.ModuleList([_ConvPart(mcfg, mcfg.image_size >> s) for s in range(self.scales)])
        self.head = _ProjectionHead(num_videos, mcfg.emb_dim)

    W = ProjectionDiscriminator.W
    w0 = ProjectionDiscriminator.w0
    b = ProjectionDiscriminator.b
    num_videos = ProjectionDiscriminator.num_videos

    def forward(self, x: torch.Tensor, y: torch.Tensor, video_idx: torch.Tensor | None = None,
                w: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Same interface as :meth:`ProjectionDiscriminator.forward`."""
        proj = self.head.projection_vector(x.shape[0], video_idx, w)  # (B, N)
        scores, feats = [], []
        for s, V in enumerate(self.Vs):
            if s:
                x, y = avg_pool2(x), avg_pool2(y)
            v, f = V(x, y)
            scores.append(self.head.score(v, proj))
            feats += f
        return torch.stack(scores).mean(dim=0), feats
