"""Few-shot fine-tuning on T frames of a new person (Zakharov et al. 2019, section 3.4).

After meta-learning, a new person's T frames give ``e_new`` (mean of E over the T frames). Then

* the generator's AdaIN parameters ``psi'`` are initialised to ``P e_new`` and trained directly
  (an ``nn.Parameter``; the embedder E is no longer used);
* the discriminator's projection vector ``w'`` is initialised to ``w0 + e_new`` (which is what
  the matching loss of meta-learning makes ``W_i + w0`` close to) and trained with D;
* G and D are fine-tuned with ``L_CNT + L_ADV`` (no ``L_MCH``: there is no ``W_i`` row) on batches
  drawn from the T frames (at most T per batch, without repeats), for ``cfg.finetune.steps`` steps with ``cfg.finetune`` learning rates.

The update step is :func:`headpuppet.training.steps.train_step` (a D step and a G step on one fake),
the same as meta-learning, run with ``psi=`` and ``w=``. The result is a :class:`Person` with its
own copies of G and D (the base model is untouched), which
:meth:`~headpuppet.fewshot.animator.Animator.save_person` writes as a person folder that
``headpuppet animate`` takes as SOURCE. :func:`headpuppet.fine_tune` (``headpuppet fine-tune``) does
the whole of it, from photos and a checkpoint to the folder.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError
from ..media.imaging import to_tensor, to_uint8, write_image
from ..media.landmarks import rasterise
from ..models.warp_generator import needs_source
from ..progress import NULL, Reporter
from ..training.losses import ContentLoss
from ..training.steps import autocast_for, train_step
from .person import Person


#: the most memory fine-tuning keeps for the perceptual networks' activations of its T frames
TARGETS_MAX_BYTES = 512 * 2**20


def _preview(animator, person, frames: np.ndarray, points: np.ndarray, gen, psi, rows: int = 4) -> np.ndarray:
    """Grid with one row per frame: source shot | landmark image | generated | real."""
    idx = np.linspace(0, len(frames) - 1, min(rows, len(frames))).round().astype(int)
    y = animator.landmark_images(points[idx], None if person.iris is None else person.iris[idx])
    src = animator.source_kwargs(gen, person, points[idx])
    if src and len(frames) > 1:  # as in training: a frame is never warped from itself
        src["allowed"] = torch.from_numpy(idx[:, None] != np.arange(len(frames))[None]).to(y.device)
    with torch.no_grad():
        fake = to_uint8(gen(y, psi=psi.expand(len(idx), -1), **src).float())
    out = []
    for j, i in enumerate(idx):
        lm = rasterise(points[i], animator.size, iris=person.iris[i] if (person.iris is not None and animator.uses_iris) else None)
        out.append(np.concatenate([person.frames[0], lm, fake[j], frames[i]], axis=1))
    return np.concatenate(out, axis=0)


def fine_tune_person(animator, person, steps: int | None = None, *, reporter: Reporter | None = None,
                     batch_size: int | None = None, lr_g: float | None = None, lr_d: float | None = None,
                     preview_dir: str | Path | None = None, preview_every: int | None = None,
                     content_loss=None, seed: int = 0, amp: str = "none"):
    """Fine-tune G and D on the person's shots (all of them are the T frames); returns a new Person.

    Args:
        animator: a :class:`headpuppet.fewshot.animator.Animator` with a discriminator.
        person: from ``animator.prepare_source(frames)`` (``e`` is the mean over the T frames).
        steps, batch_size, lr_g, lr_d, preview_every: default to ``animator.cfg.finetune``.
        preview_dir: write ``step-NNNNNNN.png`` previews there (source | landmark | generated | real).
        content_loss: a :class:`headpuppet.training.losses.ContentLoss` (default: built from ``cfg.loss``).
        seed: seeds the batch order and the networks' randomness.
    """
    cfg = animator.cfg
    fcfg = cfg.finetune
    steps = fcfg.steps if steps is None else int(steps)
    # never more than the T frames in a batch: copies of a frame add compute, not information (every
    # term is a mean over the batch, so T = 1 gives the same step at a quarter of the cost of batch 4)
    batch_size = min(batch_size or fcfg.batch_size, len(person.frames))
    preview_every = fcfg.preview_every if preview_every is None else preview_every
    reporter = reporter or NULL
    if animator.discriminator is None:
        raise CheckpointError(f"{animator.source} has no discriminator, which fine-tuning needs; use a "
                              f"training checkpoint or an export made with the discriminator")
    device = animator.device
    if content_loss is None:
        content_loss = ContentLoss(animator.pm, cfg.loss, device=device)

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = clone_module(person.generator or animator.generator).train()
    disc = clone_module(person.discriminator or animator.discriminator).train()
    psi = torch.nn.Parameter(person.psi.detach().clone().to(device))          # (1, P), psi' = P e_new
    w0 = disc.w0.detach().reshape(1, -1)
    w_init = person.w if person.w is not None else w0 + person.e
    w = torch.nn.Parameter(w_init.detach().clone().to(device))               # (1, N), w' = w0 + e_new

    class _Nets:  # what the step functions read
        embedder = None
        generator = gen
        discriminator = disc

    betas = tuple(cfg.train.betas)
    opt_g = torch.optim.Adam(list(gen.parameters()) + [psi], lr=lr_g or fcfg.lr_g, betas=betas)
    opt_d = torch.optim.Adam(list(disc.parameters()) + [w], lr=lr_d or fcfg.lr_d, betas=betas)
    ac = autocast_for(device, amp)

    frames, points = person.frames, person.points
    reals = to_tensor(frames).to(device)                                      # (T, 3, S, S)
    ys = animator.landmark_images(points, person.iris)                        # (T, 3, S, S)
    T = len(frames)
    warp_guided = needs_source(gen)
    pts = torch.from_numpy(np.asarray(points, np.float32)).to(device)         # (T, 68, 2)
    content = _FixedTargets(content_loss, reals, pts)
    if preview_dir is not None:
        Path(preview_dir).mkdir(parents=True, exist_ok=True)
    stats: dict[str, float] = {}
    with reporter.task("fine-tune", total=steps) as task:
        for step in range(1, steps + 1):
            idx = torch.from_numpy(rng.choice(T, size=batch_size, replace=False)).to(device)
            b = len(idx)
            batch = {"target": reals[idx], "target_landmarks": ys[idx], "target_points": pts[idx]}
            if warp_guided:
                # the warp-guided G warps one of the T frames onto the target; never the target
                # itself (that would teach it to copy), unless there is only one frame
                batch.update(shots=reals[None].expand(b, -1, -1, -1, -1), shot_points=pts[None].expand(b, -1, -1, -1))
                if T > 1:
                    batch["shot_allowed"] = idx[:, None] != torch.arange(T, device=device)[None]
            content.rows = idx
            stats = train_step(_Nets, batch, opt_d, opt_g, content, cfg, w=w.expand(b, -1),
                               psi=psi.expand(b, -1), use_match=False, match_w=False, autocast=ac)
            task.advance(1, G=stats["Loss/G/total"], D=stats["Loss/D/total"])
            if preview_dir is not None and preview_every and (step % preview_every == 0 or step == steps):
                gen.eval()
                write_image(Path(preview_dir) / f"step-{step:07d}.png",
                            _preview(animator, person, frames, points, gen, psi.detach()))
                gen.train()
    gen.eval()
    disc.eval()
    return Person(frames=person.frames, points=person.points, iris=person.iris, e=person.e,
                  psi=psi.detach().clone(), w=w.detach().clone(), image=person.image, box=person.box,
                  labels=person.labels, faces_found=person.faces_found, generator=gen, discriminator=disc,
                  finetune_steps=person.finetune_steps + steps)


class _FixedTargets:
    """The content loss of fine-tuning: the T frames never change, so each perceptual network's
    activations of them are computed once (:meth:`ContentLoss.targets`) and every step compares the
    fake with the rows of its batch (``rows``, set before the step) instead of running the network
    on the real frames again. Where they would take more than :data:`TARGETS_MAX_BYTES` (VGG
    activations of many large frames), or the loss has no ``targets()``, every step computes them."""

    def __init__(self, loss: ContentLoss, reals: torch.Tensor, points: torch.Tensor, chunk: int = 8):
        self.loss = loss
        self.rows: torch.Tensor | None = None
        self.cache = None
        if not callable(getattr(loss, "targets", None)):
            return
        first = loss.targets(reals[:1], points[:1])
        per_frame = sum(a.nelement() * a.element_size() for acts in first.values() for a in acts)
        if per_frame * len(reals) > TARGETS_MAX_BYTES:
            return
        parts = [first] + [loss.targets(reals[i:i + chunk], points[i:i + chunk]) for i in range(1, len(reals), chunk)]
        self.cache = {name: [torch.cat([p[name][layer] for p in parts]) for layer in range(len(acts))]
                      for name, acts in first.items()}

    def __call__(self, fake: torch.Tensor, real: torch.Tensor, points: torch.Tensor | None = None):
        if self.cache is None:
            return self.loss(fake, real, points=points)
        targets = {name: [a[self.rows] for a in acts] for name, acts in self.cache.items()}
        return self.loss(fake, real, points=points, targets=targets)


def clone_module(module: torch.nn.Module) -> torch.nn.Module:
    """An independent copy (fine-tuning must not change the base model)."""
    return copy.deepcopy(module)
