"""One discriminator update and one embedder+generator update (Zakharov et al. 2019, sections 3.2-3.4).

Meta-learning (section 3.2) alternates

* a **D step** minimising the hinge loss ``L_DSC = max(0, 1 + D(x_hat)) + max(0, 1 - D(x))`` on the
  real target ``x`` and a detached fake ``x_hat = G(y; P e)``;
* a **G step** minimising ``L_CNT + L_ADV + L_MCH`` over the embedder and the generator, where
  ``L_CNT`` is the content loss (one weighted term per perceptual network), ``L_ADV = -adv * D(x_hat)
  + fm * FM(D features of x, x_hat)``, and ``L_MCH = mch * L1(e_i, W_i)``.

``L_MCH`` involves both the embedding ``e_i`` (embedder) and ``W_i`` (a discriminator parameter).
The G step pulls ``e_i`` towards ``W_i`` (``W`` held fixed); when ``match_w`` is on the D step adds
the same term with ``e_i`` held fixed (``Loss/D/mch``), so ``W`` is pulled towards the embeddings by
D's own optimiser. Both sides meeting is what fine-tuning relies on when it starts ``w'`` from
``w0 + e_new`` (section 3.4).

Fine-tuning reuses both functions unchanged:

* pass ``psi`` ``(B, psi_dim)`` (the trainable ``psi'``, initialised to ``P e_new``) to skip the
  embedder: the generator runs as ``G(y, psi=psi)``; include ``psi'`` in ``opt_g``'s parameters;
* pass ``w`` ``(B, N)`` (the trainable ``w'``, initialised to ``w0 + e_new``) and the discriminator
  uses it in place of ``W[video_idx] + w0``; include ``w'`` in ``opt_d``'s parameters;
* ``use_match=False`` / ``match_w=False`` (there is no ``e_i`` and no ``W_i`` row).
  The batch then needs only ``target`` and ``target_landmarks``.

Discriminator parameters are frozen during the G step (their flags are restored afterwards), so
the G step leaves no gradients in D and D's DDP wrapper is not involved (the G step calls the
unwrapped D: D is not being updated there, so there is nothing to synchronise).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import torch
from torch.profiler import record_function

from ..devices import native_bf16
from ..errors import ConfigError
from ..models.warp_generator import needs_source, source_kwargs
from .distributed import unwrap
from .losses import adversarial_g, embedding_match, feature_matching, hinge_d, ssim_loss

Batch = dict[str, torch.Tensor]


def resolve_amp(amp: str | None, channels_last: bool | str, device: torch.device | str) -> tuple[str, bool]:
    """``(amp, channels_last)`` as training runs them: ``amp`` ``"auto"`` is ``"bf16"`` where the device
    computes bf16 natively (:func:`headpuppet.devices.native_bf16`: AMX or AVX-512 BF16, CUDA with
    bf16), else ``"none"``; ``channels_last`` ``"auto"`` follows it (channels-last with bf16: on CPU
    the pair is what makes bf16 pay, ``bench/train.py``)."""
    amp = "none" if amp in (None, "", "fp32") else amp
    if amp == "auto":
        amp = "bf16" if native_bf16(device) else "none"
    if amp not in ("none", "bf16"):
        raise ConfigError(f"train.amp must be 'none', 'bf16' or 'auto', got {amp!r}")
    if channels_last == "auto":
        channels_last = amp == "bf16"
    return amp, bool(channels_last)


def autocast_for(device: torch.device | str, amp: str = "none") -> Callable[[], Any]:
    """A context factory: bf16 autocast when ``amp`` is (or resolves to, :func:`resolve_amp`) ``"bf16"``,
    else a no-op."""
    device = torch.device(device)
    amp, _ = resolve_amp(amp, False, device)
    if amp == "none":
        return nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def generate(nets, batch: Batch, psi: torch.Tensor | None = None,
             parts: bool = False) -> tuple[torch.Tensor | dict, torch.Tensor | None]:
    """``x_hat`` ``(B, 3, S, S)`` and the mean embedding ``e`` ``(B, N)`` (``None`` when ``psi`` given).

    ``parts`` (warp-guided G only) returns the generator's dict (``image``, ``warped``, ``mask``,
    ``generated``) in place of ``x_hat``.
    """
    y = batch["target_landmarks"]  # (B, 3, S, S)
    src = source_kwargs(nets.generator, batch)  # the source shots, for the warp-guided generator
    if parts and src:
        src["return_parts"] = True
    if psi is not None:
        return nets.generator(y, psi=psi, **src), None
    e, _ = nets.embedder(batch["shots"], batch["shot_landmarks"])  # (B, N), (B, K, N)
    return nets.generator(y, e=e, **src), e


def _w_rows(D: torch.nn.Module, batch: Batch) -> torch.Tensor:
    return unwrap(D).W[batch["video_idx"]]  # (B, N)


def discriminator_step(nets, batch: Batch, opt_d: torch.optim.Optimizer, cfg, w: torch.Tensor | None = None,
                       psi: torch.Tensor | None = None, autocast: Callable[[], Any] | None = None,
                       match_w: bool = True, fake: torch.Tensor | None = None,
                       e: torch.Tensor | None = None) -> dict[str, float]:
    """One D update on the hinge loss; returns ``{"Loss/D/real", "Loss/D/fake"[, "Loss/D/mch"], ...}``.

    Args:
        nets: anything with ``.embedder``, ``.generator``, ``.discriminator`` (possibly DDP-wrapped).
        batch: an episode batch (see :class:`headpuppet.data.episodes.EpisodeDataset`).
        opt_d: the optimiser of D's parameters (and of ``w'`` when fine-tuning).
        cfg: the :class:`headpuppet.config.Config` (loss weights).
        w: ``(B, N)`` projection vectors replacing ``W[video_idx] + w0`` (fine-tuning's ``w'``).
        psi: ``(B, psi_dim)`` generator parameters replacing ``P E(shots)`` (fine-tuning's ``psi'``).
        autocast: context factory (see :func:`autocast_for`).
        match_w: add ``mch * L1(W_i, e_i.detach())`` so ``W`` follows the embeddings (meta-learning).
        fake: a precomputed fake (skips the generator forward; detached here).
        e: the embedding that came with ``fake`` (for ``match_w``).
    """
    ac = autocast or nullcontext
    D = nets.discriminator
    real, y = batch["target"], batch["target_landmarks"]  # (B, 3, S, S)
    if fake is None:
        with torch.no_grad(), ac():
            fake, e = generate(nets, batch, psi)
    fake = fake.detach().to(real.dtype)
    opt_d.zero_grad(set_to_none=True)
    # One forward over real and fake together: one DDP forward per backward, and a single power
    # iteration of the spectral norms per D step.
    vid = batch.get("video_idx")
    with ac():
        score, _ = D(torch.cat([real, fake]), torch.cat([y, y]),
                     video_idx=None if vid is None or w is not None else torch.cat([vid, vid]),
                     w=None if w is None else torch.cat([w, w]))
    real_score, fake_score = score.float().chunk(2)  # (B,), (B,)
    terms = hinge_d(real_score, fake_score)
    out = {"Loss/D/real": terms["real"], "Loss/D/fake": terms["fake"]}
    if match_w and e is not None and w is None and cfg.loss.mch > 0:
        out["Loss/D/mch"] = cfg.loss.mch * embedding_match(e.detach().float(), _w_rows(D, batch).float())
    loss = sum(out.values())
    loss.backward()
    opt_d.step()
    stats = {k: float(v.detach()) for k, v in out.items()}
    stats["Loss/D/total"] = float(loss.detach())
    stats["Score/real"] = float(real_score.detach().mean())
    stats["Score/fake"] = float(fake_score.detach().mean())
    return stats


def generator_step(nets, batch: Batch, opt_g: torch.optim.Optimizer, content_loss, cfg,
                   w: torch.Tensor | None = None, psi: torch.Tensor | None = None, use_match: bool = True,
                   autocast: Callable[[], Any] | None = None, generated: tuple | None = None) -> dict[str, float]:
    """One embedder+generator update; returns ``{"Loss/G/<perceptual>", "Loss/G/adv", "Loss/G/fm",
    "Loss/G/mch", "Loss/G/total"}`` (``mch`` only with an embedder and ``use_match``).

    Args: as :func:`discriminator_step`, plus ``content_loss`` (a :class:`headpuppet.training.losses.ContentLoss`,
    whose terms come back already weighted), ``opt_g`` over E and G (or G and ``psi'``), and
    ``generated``: :func:`generate_for_step`'s output for this batch, with its graph (skips the
    forward of E and G).
    """
    ac = autocast or nullcontext
    D = unwrap(nets.discriminator)
    real, y = batch["target"], batch["target_landmarks"]
    vid = None if w is not None else batch.get("video_idx")
    flags = [p.requires_grad for p in D.parameters()]
    D.requires_grad_(False)
    try:
        opt_g.zero_grad(set_to_none=True)
        if generated is None:
            generated = generate_for_step(nets, batch, cfg, psi, autocast)
        fake, e = generated                                         # (B, 3, S, S), (B, N)
        aux = isinstance(fake, dict)
        with ac():
            drawn = None
            if aux:
                fake, drawn = fake["image"], fake["generated"]
            with torch.no_grad():
                _, real_feats = D(real, y, video_idx=vid, w=w)
            fake_score, fake_feats = D(fake, y, video_idx=vid, w=w)
        out: dict[str, torch.Tensor] = {}
        # the target's landmarks let face networks (dlib-identity) cut an aligned chip
        for name, value in content_loss(fake.float(), real.float(), points=batch.get("target_points")).items():
            out[f"Loss/G/{name}"] = value
        if getattr(cfg.loss, "ssim", 0.0) > 0:
            out["Loss/G/ssim"] = cfg.loss.ssim * ssim_loss(fake.float(), real.float())
        if drawn is not None:
            out["Loss/G/generated_l1"] = cfg.loss.generated_l1 * torch.nn.functional.l1_loss(drawn.float(), real.float())
        out["Loss/G/adv"] = cfg.loss.adv * adversarial_g(fake_score.float())
        if cfg.loss.fm > 0:
            out["Loss/G/fm"] = cfg.loss.fm * feature_matching([f.float() for f in real_feats],
                                                               [f.float() for f in fake_feats])
        if use_match and e is not None and cfg.loss.mch > 0:
            out["Loss/G/mch"] = cfg.loss.mch * embedding_match(e.float(), _w_rows(D, batch).detach().float())
        loss = sum(out.values())
        loss.backward()
        opt_g.step()
    finally:
        for p, f in zip(D.parameters(), flags):
            p.requires_grad_(f)
    stats = {k: float(v.detach()) for k, v in out.items()}
    stats["Loss/G/total"] = float(loss.detach())
    return stats


def generate_for_step(nets, batch: Batch, cfg, psi: torch.Tensor | None = None,
                      autocast: Callable[[], Any] | None = None) -> tuple[Any, torch.Tensor | None]:
    """The fake of one training step, with its graph: ``(x_hat or the warp-guided G's parts, e)``.

    The warp-guided G's parts (its own drawing before the blend) come back when ``generated_l1`` is
    on: behind a blend mask near 1 the drawing would see ~10% of the gradient, stay poor, and never
    earn a lower mask, so it gets a loss of its own."""
    aux = getattr(cfg.loss, "generated_l1", 0.0) > 0 and needs_source(nets.generator)
    with (autocast or nullcontext)():
        return generate(nets, batch, psi, parts=aux)


def train_step(nets, batch: Batch, opt_d: torch.optim.Optimizer, opt_g: torch.optim.Optimizer, content_loss, cfg,
               w: torch.Tensor | None = None, psi: torch.Tensor | None = None, use_match: bool = True,
               match_w: bool = True, autocast: Callable[[], Any] | None = None) -> dict[str, float]:
    """One D step then one G step on the same fake, generated once: E and G run forward once per
    step, and D and G see the same ``x_hat`` (the D step does not change E or G; generating twice
    only drew a second random warp source and ran E's and G's spectral-norm power iterations twice).
    Arguments as :func:`discriminator_step` and :func:`generator_step`; returns both steps' statistics."""
    # the three parts are labelled for torch.profiler (bench/profile_steps.py): microseconds when it is off
    with record_function("E+G forward"):
        generated = generate_for_step(nets, batch, cfg, psi, autocast)
    fake, e = generated
    image = fake["image"] if isinstance(fake, dict) else fake
    with record_function("D step"):
        d = discriminator_step(nets, batch, opt_d, cfg, w=w, psi=psi, autocast=autocast, match_w=match_w,
                               fake=image.detach(), e=None if e is None else e.detach())
    with record_function("G step"):
        g = generator_step(nets, batch, opt_g, content_loss, cfg, w=w if w is None else w.detach(), psi=psi,
                           use_match=use_match, autocast=autocast, generated=generated)
    return {**d, **g}
