"""The generator G and the projection P (Zakharov et al. 2019, sections 3.2 and 4).

G follows the image-transformation network of Johnson et al. (2016) with its down- and up-sampling
layers replaced by BigGAN residual blocks (section 4):

* an encoder of the landmark image ``y``: residual down-sampling blocks with regular instance
  normalisation from the image size down to ``gen_bottleneck`` (16x16 in the paper), with
  self-attention at 32x32;
* ``gen_res_blocks`` residual blocks at the bottleneck and residual up-sampling blocks back to the
  image size (self-attention at 64x64), all normalised by AdaIN whose scales and biases are the
  person-specific parameters ``psi``;
* a final AdaIN, ReLU, 3x3 convolution to RGB and tanh.

``psi = P e`` (eq. 2): P is a learned, spectral-normalised linear map from the embedding to all
AdaIN parameters. Few-shot fine-tuning (section 3.4) starts ``psi'`` at ``P e_new`` and then trains
``psi'`` directly, so :meth:`Generator.forward` accepts either ``e`` or ``psi``.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import (AdaIN, DownPath, ResBlock, ResBlockUp, SelfAttention, check_model_config, conv, down_channels, linear,
                     norm_relu)


class Generator(nn.Module):
    """``G(y; psi) -> x_hat``; see the module docstring.

    Args:
        mcfg: :class:`headpuppet.config.ModelConfig` (image_size, ch, max_ch, emb_dim,
            gen_bottleneck, gen_res_blocks, attention_down, attention_up, spectral_norm).

    Attributes:
        psi_dim: number of AdaIN parameters (scale and bias of every AdaIN layer), the size of psi.
    """

    def __init__(self, mcfg, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        check_model_config(mcfg)
        sn = mcfg.spectral_norm
        size, bottleneck = mcfg.image_size, mcfg.gen_bottleneck
        self.image_size = size
        self.emb_dim = mcfg.emb_dim

        self.encoder = DownPath(in_channels, size, bottleneck, mcfg.ch, mcfg.max_ch, mcfg.attention_down, sn=sn, norm=True)
        c = self.encoder.out_channels
        self.res_blocks = nn.ModuleList([ResBlock(c, sn=sn) for _ in range(mcfg.gen_res_blocks)])

        # the decoder mirrors the encoder: channels at resolution r are the encoder's at r, ch at full size
        self.up_blocks = nn.ModuleList()
        self.up_attn = nn.ModuleDict()
        res = bottleneck
        while res < size:
            res *= 2
            c_out = mcfg.ch if res == size else down_channels(res, size, mcfg.ch, mcfg.max_ch)
            self.up_blocks.append(ResBlockUp(c, c_out, sn=sn))
            if res in mcfg.attention_up:
                self.up_attn[str(len(self.up_blocks) - 1)] = SelfAttention(c_out, sn=sn)
            c = c_out
        self.out_norm = AdaIN(c)
        self.out_conv = conv(c, out_channels, 3, sn=sn)

        self._adain = [*self.res_blocks, *self.up_blocks, self.out_norm]
        self.psi_dim = sum(m.num_adain_params for m in self._adain)

        # P (eq. 2). Its bias starts AdaIN at the identity (scale 1, bias 0) so that a fresh
        # generator is a plain instance-normalised network whatever e is; the paper's P has no
        # bias, which leaves the initial scales at P e (uncontrolled, and 0 for e = 0).
        # model.projection_sn=false leaves P unnormalised: spectral norm caps its gain at 1, which
        # kept person-specific modulation to ~2% of psi in the first demo model (issue 9).
        self.projection = linear(mcfg.emb_dim, self.psi_dim, sn=sn and getattr(mcfg, "projection_sn", True), bias=True)
        with torch.no_grad():
            self.projection.bias.copy_(self._identity_psi())

    def _identity_psi(self) -> torch.Tensor:
        parts = []
        for m in self._adain:
            for norm in ([m] if isinstance(m, AdaIN) else [m.norm1, m.norm2]):
                parts += [torch.ones(norm.channels), torch.zeros(norm.channels)]
        return torch.cat(parts)

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """The paper's P: ``(B, N)`` embedding -> ``(B, psi_dim)`` AdaIN parameters."""
        return self.projection(e)

    def forward(self, y: torch.Tensor, e: torch.Tensor | None = None, psi: torch.Tensor | None = None) -> torch.Tensor:
        """Render the person described by ``e`` (or ``psi``) in the pose of landmark image ``y``.

        Args:
            y: ``(B, 3, H, W)`` landmark images in [-1, 1].
            e: ``(B, N)`` embeddings (projected by P), or
            psi: ``(B, psi_dim)`` AdaIN parameters (fine-tuning's psi'); give exactly one.

        Returns:
            ``(B, 3, H, W)`` images in [-1, 1].
        """
        if (e is None) == (psi is None):
            raise ValueError("Generator.forward needs exactly one of e (embedding) or psi (AdaIN parameters)")
        if psi is None:
            psi = self.project(e)
        if psi.shape != (y.shape[0], self.psi_dim):
            raise ValueError(f"psi must be {(y.shape[0], self.psi_dim)}, got {tuple(psi.shape)}")
        slices = iter(psi.split([m.num_adain_params for m in self._adain], dim=1))

        h = self.encoder(y)[-1]                      # (B, C, bottleneck, bottleneck)
        for block in self.res_blocks:
            h = block(h, next(slices))
        for i, block in enumerate(self.up_blocks):
            h = block(h, next(slices))               # resolution doubles
            if str(i) in self.up_attn:
                h = self.up_attn[str(i)](h)
        h = norm_relu(self.out_norm, h, next(slices))   # (B, ch, H, W)
        return torch.tanh(self.out_conv(h))          # (B, 3, H, W)
