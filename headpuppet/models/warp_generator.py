"""The warp-guided generator: the paper's G plus the source's own pixels (beyond the paper).

The paper's G (:mod:`headpuppet.models.generator`) must draw the whole face from ``psi = P e``
alone; with little data and compute it draws an average face. This variant (presets ``warp-128``,
``warp-256``; ``paper-256`` stays exactly the paper's) lets identity flow through pixels:

1. the source shot whose pose is closest to the target (:func:`headpuppet.models.tps.nearest_shot`)
   is warped by a thin-plate spline so its 68 landmarks land on the target's
   (:func:`headpuppet.models.tps.tps_warp`, the training-free ``warp`` baseline, in torch), with a
   validity mask (0 where the warp sampled outside the shot);
2. the encoder sees ``[y, warped, valid]`` (7 channels) instead of ``y``; the decoder keeps AdaIN
   with ``psi = P e`` and adds U-Net style skips from the encoder (1x1 convolutions, summed);
3. the last convolution gives RGB plus a blend-mask logit ``m``, and the output is
   ``sigmoid(m) * warped + (1 - sigmoid(m)) * rgb``. The mask's bias starts at +2 (88% warp), so a
   fresh model already reproduces the warp baseline and training spends its steps on what a warp
   cannot do: the mouth's interior, teeth, blinks, gaze, occlusions, lighting.

Embedder, AdaIN, the projection discriminator, meta-learning and fine-tuning are unchanged; the
generator only needs the source shots and landmarks next to ``y`` (``source_kwargs``).
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import conv, conv_add, norm_relu
from .generator import Generator
from .tps import nearest_shot, tps_warp

__all__ = ["WarpGenerator", "source_kwargs", "needs_source"]

#: initial bias of the blend-mask logit: sigmoid(2) = 0.88 of the warped shot
MASK_BIAS = 2.0


def needs_source(generator: nn.Module) -> bool:
    """Whether ``generator`` (possibly DDP-wrapped) takes the source shots as well as ``y``."""
    return bool(getattr(getattr(generator, "module", generator), "needs_source", False))


def source_kwargs(generator: nn.Module, batch: dict) -> dict:
    """The keyword arguments ``generator`` needs from an episode batch besides ``y`` (``{}`` for the paper's G)."""
    if not needs_source(generator):
        return {}
    out = {"shots": batch["shots"], "shot_points": batch["shot_points"], "target_points": batch["target_points"]}
    if "shot_allowed" in batch:
        out["allowed"] = batch["shot_allowed"]
    return out


class WarpGenerator(Generator):
    """``G(y, warp(source); psi) -> x_hat``; see the module docstring. Built from the same
    :class:`headpuppet.config.ModelConfig` as :class:`Generator` (``model.generator: warp``)."""

    needs_source = True

    def __init__(self, mcfg):
        super().__init__(mcfg, in_channels=7, out_channels=4)
        sn = mcfg.spectral_norm
        # one skip per decoder resolution that the encoder also has, plus a full-resolution stem
        enc_ch = {self.image_size >> (i + 1): blk.conv2.out_channels if hasattr(blk.conv2, "out_channels")
                  else blk.conv2.weight.shape[0] for i, blk in enumerate(self.encoder.blocks)}
        self.skips = nn.ModuleDict()
        res = mcfg.gen_bottleneck
        for i, block in enumerate(self.up_blocks):
            res *= 2
            c_out = block.conv2.weight.shape[0]
            if res in enc_ch:
                self.skips[str(i)] = conv(enc_ch[res], c_out, 1, sn=sn)
        self.stem = conv(7, self.out_norm.channels, 3, sn=sn)
        with torch.no_grad():
            self.out_conv.bias[3] = MASK_BIAS

    def warp_source(self, shots: torch.Tensor, shot_points: torch.Tensor, target_points: torch.Tensor,
                    allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The nearest shot warped onto the target: ``(warped (B, 3, S, S), valid (B, 1, S, S))``.

        Args:
            shots: ``(B, K, 3, S, S)`` in [-1, 1]; shot_points ``(B, K, 68, 2)`` and target_points
            ``(B, 68, 2)`` in pixels of the ``S x S`` crop; allowed ``(B, K)`` bool or None.
        """
        b = shots.shape[0]
        idx = nearest_shot(shot_points.float(), target_points.float(), allowed)            # (B,)
        ar = torch.arange(b, device=shots.device)
        return tps_warp(shots[ar, idx], shot_points[ar, idx].float(), target_points.float())

    def forward(self, y: torch.Tensor, e: torch.Tensor | None = None, psi: torch.Tensor | None = None, *,
                shots: torch.Tensor | None = None, shot_points: torch.Tensor | None = None,
                target_points: torch.Tensor | None = None, allowed: torch.Tensor | None = None,
                return_parts: bool = False):
        """As :meth:`Generator.forward`, plus the source: ``shots`` ``(B, K, 3, S, S)``,
        ``shot_points`` ``(B, K, 68, 2)``, ``target_points`` ``(B, 68, 2)`` (crop pixels) and
        optionally ``allowed`` ``(B, K)``. ``return_parts`` returns a dict with ``image``,
        ``warped``, ``mask`` (the blend weight of the warp) and ``generated``."""
        if (e is None) == (psi is None):
            raise ValueError("Generator.forward needs exactly one of e (embedding) or psi (AdaIN parameters)")
        if shots is None or shot_points is None or target_points is None:
            raise ValueError("the warp-guided generator needs shots, shot_points and target_points")
        if psi is None:
            psi = self.project(e)
        if psi.shape != (y.shape[0], self.psi_dim):
            raise ValueError(f"psi must be {(y.shape[0], self.psi_dim)}, got {tuple(psi.shape)}")
        # the warp and the final blend stay in float32 under autocast: bf16 would move the source's
        # own pixels by up to 2 levels of 255 before the network has done anything
        with torch.autocast(y.device.type, enabled=False):
            warped, valid = self.warp_source(shots.float(), shot_points, target_points, allowed)
        x = torch.cat([y, warped.to(y.dtype), valid.to(y.dtype)], 1)   # (B, 7, S, S)
        slices = iter(psi.split([m.num_adain_params for m in self._adain], dim=1))

        feats = self.encoder(x)                                   # S/2 ... bottleneck
        h = feats[-1]
        for block in self.res_blocks:
            h = block(h, next(slices))
        n = len(feats)
        for i, block in enumerate(self.up_blocks):
            h = block(h, next(slices))                            # resolution doubles
            if str(i) in self.skips:
                h = conv_add(self.skips[str(i)], feats[n - 2 - i], h)
            if str(i) in self.up_attn:
                h = self.up_attn[str(i)](h)
        h = conv_add(self.stem, x, h)                             # (B, ch, S, S)
        h = norm_relu(self.out_norm, h, next(slices))
        out = self.out_conv(h)                                    # (B, 4, S, S)
        rgb = torch.tanh(out[:, :3].float())
        m = torch.sigmoid(out[:, 3:].float()) * valid             # never trust pixels the warp invented
        image = m * warped + (1 - m) * rgb
        if return_parts:
            return {"image": image, "warped": warped, "mask": m, "generated": rgb}
        return image
