"""The embedder E (Zakharov et al. 2019, section 3.2 and section 4 "Implementation details").

E maps a video frame and its landmark image, concatenated into 6 channels, to an N-dimensional
vector: BigGAN residual down-sampling blocks without normalisation from the image size down to 4x4
(channels 64 -> 512, the last block giving N), self-attention at 32x32, global sum pooling over
space followed by ReLU. The person's embedding ``e`` is the mean over the K shots (eq. 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import DownPath, check_model_config


class Embedder(nn.Module):
    """``E(x, y) -> e``; see the module docstring.

    Args:
        mcfg: :class:`headpuppet.config.ModelConfig` (image_size, ch, max_ch, emb_dim,
            attention_down, spectral_norm).
    """

    def __init__(self, mcfg):
        super().__init__()
        check_model_config(mcfg)
        self.image_size = mcfg.image_size
        self.emb_dim = mcfg.emb_dim
        self.path = DownPath(6, mcfg.image_size, 4, mcfg.ch, mcfg.max_ch, mcfg.attention_down,
                             sn=mcfg.spectral_norm, norm=False, last_ch=mcfg.emb_dim)

    def embed(self, frames: torch.Tensor, landmark_images: torch.Tensor) -> torch.Tensor:
        """One embedding per (frame, landmark image) pair: ``(B, 3, H, W)`` x 2 -> ``(B, N)``."""
        h = self.path(torch.cat([frames, landmark_images], dim=1))[-1]  # (B, N, 4, 4)
        return F.relu(h.sum(dim=(2, 3)))                                  # (B, N)

    def forward(self, frames: torch.Tensor, landmark_images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed K shots per person.

        Args:
            frames: ``(B, K, 3, H, W)`` in [-1, 1].
            landmark_images: ``(B, K, 3, H, W)`` in [-1, 1], the landmark images of ``frames``.

        Returns:
            ``(e, e_k)``: the mean embedding ``(B, N)`` and the per-shot embeddings ``(B, K, N)``.
        """
        if frames.dim() != 5 or frames.shape != landmark_images.shape or frames.shape[2] != 3:
            raise ValueError(f"Embedder needs frames and landmark images of the same shape (B, K, 3, H, W); "
                             f"got {tuple(frames.shape)} and {tuple(landmark_images.shape)}")
        b, k = frames.shape[:2]
        e_k = self.embed(frames.flatten(0, 1), landmark_images.flatten(0, 1)).view(b, k, -1)  # (B, K, N)
        return e_k.mean(dim=1), e_k
