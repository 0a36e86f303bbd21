"""The losses of meta-learning and fine-tuning (Zakharov et al. 2019, section 3.2).

Equations are quoted by formula and the paper's symbols rather than by number (the arXiv versions
number them differently). Embedder/generator objective: L = L_CNT + L_ADV + L_MCH, with

* L_CNT, the content loss: L1 distances between activations of fixed perceptual networks (VGG19
  and VGGFace in the paper) for the real frame x and the generated frame x_hat, weighted per
  network - :class:`ContentLoss`;
* L_ADV = -D(x_hat, y, i) + L_FM: the realism score of the fake (:func:`adversarial_g`)
  plus feature matching over the discriminator's block activations (:func:`feature_matching`;
  weight ``loss.fm`` = 10 in the paper);
* L_MCH = || W_i - e_hat_i ||_1, pulling the embedder's output and the discriminator's
  per-video column together (:func:`embedding_match`; weight ``loss.mch`` = 80).

Discriminator objective, hinge loss:
L_DSC = max(0, 1 + D(x_hat)) + max(0, 1 - D(x)) (:func:`hinge_d`).

Every term here is a mean over its elements (an L1 "norm" is the mean absolute difference), so the
weights do not depend on image size or batch size. The weights are applied by the caller
(training steps), except for L_CNT whose per-network weights live in ``LossConfig.perceptual``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import LossConfig
from ..plugins import registry


class ContentLoss(nn.Module):
    """L_CNT: for each perceptual network ``name`` with weight ``w`` in ``loss_cfg.perceptual``,
    ``w * sum_l mean|phi_l(fake) - phi_l(real)|`` over its compared layers ``l``.

    The networks come from the ``perceptual`` plugin registry (``vgg19``, ``vggface``,
    ``laplacian-pyramid`` or a third party's), built with ``layers=loss_cfg.perceptual_layers[name]``
    where given (else the network's own default). A network with weight 0 is not built. Building
    raises :class:`headpuppet.errors.WeightsMissingError` when a network's weights are absent.

    ``forward(fake (B, 3, H, W), real (B, 3, H, W))``, both in ``[-1, 1]``, returns
    ``{name: weighted scalar}``. ``real`` is treated as a constant target: its activations are
    computed without autograd, and gradients flow to ``fake`` only.

    Args:
        pm: the plugin manager.
        loss_cfg: the :class:`LossConfig` (``perceptual`` weights and ``perceptual_layers``).
        weights_dir: the weights directory (default: ``$HEADPUPPET_WEIGHTS`` or ``~/.cache/headpuppet/weights``).
        device: where the networks live.
    """

    def __init__(self, pm, loss_cfg: LossConfig, weights_dir: str | Path | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        reg = registry(pm, "perceptual")
        self.weights: dict[str, float] = {}
        self.nets = nn.ModuleDict()
        for name, weight in loss_cfg.perceptual.items():
            if float(weight) == 0.0:
                continue
            layers = (loss_cfg.perceptual_layers or {}).get(name)
            # `layers` only when configured, so a third-party factory without that argument still works
            extra = {} if layers is None else {"layers": list(layers)}
            net = reg.create(name, weights_dir=weights_dir, device=device, **extra)
            self.nets[name] = net
            self.weights[name] = float(weight)

    def targets(self, real: torch.Tensor, points: torch.Tensor | None = None) -> dict[str, list[torch.Tensor]]:
        """Each network's activations of ``real`` (without autograd): what :meth:`forward` compares
        the fake with. Rows are per sample, so a fixed set of frames (fine-tuning's T frames) can be
        computed once and its rows passed to :meth:`forward` as ``targets`` at every step."""
        out = {}
        with torch.no_grad():
            for name, net in self.nets.items():
                out[name] = list(net(real, **_points_for(net, points)))  # (B, C_l, H_l, W_l) per compared layer
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor, points: torch.Tensor | None = None,
                targets: dict[str, list[torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Weighted terms ``{name: loss}``. ``points`` ``(B, 68, 2)``, the target's landmarks in pixels,
        go to the networks that declare ``accepts_points`` (face-aligned crops, e.g. ``dlib-identity``).
        ``targets``: :meth:`targets` of ``real``, computed before (then ``real`` is not run again)."""
        if fake.shape != real.shape:
            raise ValueError(f"fake {tuple(fake.shape)} and real {tuple(real.shape)} must have the same shape")
        targets = self.targets(real, points) if targets is None else targets
        out: dict[str, torch.Tensor] = {}
        for name, net in self.nets.items():
            acts = net(fake, **_points_for(net, points))
            total = sum(F.l1_loss(a, t) for a, t in zip(acts, targets[name]))
            out[name] = self.weights[name] * total
        return out


def _points_for(net: nn.Module, points: torch.Tensor | None) -> dict:
    """``points=`` for a perceptual network that declares ``accepts_points`` (a face network cutting
    aligned chips, e.g. ``dlib-identity``), nothing for the others."""
    return {"points": points} if points is not None and getattr(net, "accepts_points", False) else {}


def ssim_map(a: torch.Tensor, b: torch.Tensor, win_size: int = 7) -> torch.Tensor:
    """Per-image structural similarity of ``a`` and ``b`` ``(B, C, H, W)`` -> ``(B,)``, differentiable.

    The same definition as the SSIM ``evaluate`` reports (scikit-image's ``structural_similarity``
    with its defaults: a 7x7 uniform window over the valid area, sample covariance, K1 = 0.01,
    K2 = 0.03, mean over pixels and channels), so a training term on it optimises the number ``evaluate`` reports. Images are in
    ``[-1, 1]``; they are mapped to ``[0, 1]`` first, since SSIM's luminance term is not shift-invariant.
    """
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"ssim_map needs two (B, C, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < win_size:
        raise ValueError(f"ssim_map: a {a.shape[-2]}x{a.shape[-1]} image is smaller than the {win_size}x{win_size} window")
    a, b = (a + 1) / 2, (b + 1) / 2

    def mean(t):  # uniform window over the valid area: what skimage keeps after cropping its reflected border
        # = F.avg_pool2d(t, win_size, stride=1) as separable sums of shifted slices: 2-3x faster on
        # CPU with its backward (the pooling kernel, stride 1, is slow there), equal to float rounding
        h, w = t.shape[-2] - win_size + 1, t.shape[-1] - win_size + 1
        rows = sum(t[..., i:i + w] for i in range(win_size))
        return sum(rows[..., i:i + h, :] for i in range(win_size)) / (win_size * win_size)

    ux, uy = mean(a), mean(b)
    cov = win_size * win_size / (win_size * win_size - 1)
    vx = cov * (mean(a * a) - ux * ux)
    vy = cov * (mean(b * b) - uy * uy)
    vxy = cov * (mean(a * b) - ux * uy)
    c1, c2 = 0.01 ** 2, 0.03 ** 2  # K1, K2 times the data range, 1
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


def ssim_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``mean(1 - SSIM(fake, real))`` for images in ``[-1, 1]``; ``real`` is a constant target.
    Used as ``loss.ssim`` (weight); a structure term next to the content loss, beyond the paper."""
    return (1.0 - ssim_map(fake, real.detach())).mean()


def hinge_d(real_score: torch.Tensor, fake_score: torch.Tensor) -> dict[str, torch.Tensor]:
    """L_DSC, the discriminator's hinge loss, as two terms (their sum is L_DSC).

    ``real = mean(relu(1 - D(x)))``, ``fake = mean(relu(1 + D(x_hat)))``; scores are ``(B,)``.
    """
    return {"real": F.relu(1.0 - real_score).mean(), "fake": F.relu(1.0 + fake_score).mean()}


def adversarial_g(fake_score: torch.Tensor) -> torch.Tensor:
    """The realism part of L_ADV for the generator: ``-mean(D(x_hat))``."""
    return -fake_score.mean()


def feature_matching(real_feats: Sequence[torch.Tensor], fake_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """L_FM, the feature-matching part of L_ADV: mean over the discriminator's blocks of ``mean|D_k(x_hat) - D_k(x)|``.

    The real activations are targets (detached); only the fake side receives gradients.
    """
    if len(real_feats) != len(fake_feats) or not real_feats:
        raise ValueError(f"feature_matching needs equally many (>= 1) real and fake activations, got "
                         f"{len(real_feats)} and {len(fake_feats)}")
    terms = [F.l1_loss(f, r.detach()) for r, f in zip(real_feats, fake_feats)]
    return torch.stack(terms).mean()


def embedding_match(e: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """L_MCH, the embedding match: ``mean|W_i - e_hat_i|`` between the embedder's ``e`` ``(B, N)`` and the
    discriminator's columns ``W[video_idx]`` ``(B, N)``. Both receive gradients, as in the paper
    (it updates E and W alike)."""
    if e.shape != w.shape:
        raise ValueError(f"embedding_match: e {tuple(e.shape)} and w {tuple(w.shape)} must have the same shape")
    return F.l1_loss(e, w)
