"""The meta-learned model as an evaluation :class:`~.protocol.Method`, feed-forward or fine-tuned.

Zakharov et al. 2019, section 4 ("Methods"): FF builds the person from the embedder's mean over the
K shots (``psi = P e``, no training); FT fine-tunes generator and discriminator on the K shots
(section 3.4). The training-free comparators are in :mod:`.baselines`.
"""

from __future__ import annotations

import numpy as np

from ..errors import HeadpuppetError
from .protocol import video_seed


class ModelMethod:
    """The meta-learned model through :class:`headpuppet.fewshot.animator.Animator`, feed-forward
    (``ff``: ``psi = P e`` from the embedder's mean over the K shots) or fine-tuned (``ft``: section
    3.4, ``finetune_steps`` steps on the K shots; ``None`` takes the checkpoint config's default).

    The dataset's frames are already face crops with landmarks, so the shots go straight to the
    embedder (no detection or re-cropping): generated frames are in the same crop as the targets.
    """

    def __init__(self, animator, mode: str, finetune_steps: int | None = None, seed: int = 0):
        if mode not in ("ff", "ft"):
            raise HeadpuppetError(f"unknown mode '{mode}'; use ff (feed-forward) or ft (fine-tuned)")
        self.animator, self.mode, self.finetune_steps, self.seed = animator, mode, finetune_steps, seed
        self.name = mode.upper()
        self._content_loss = None

    def prepare(self, shots, points, iris=None, video_id: str = ""):
        import torch  # lazy: torch, +1.4 s at CLI start-up (measured)

        from ..fewshot.person import Person  # lazy: torch (CLI start-up)

        a = self.animator
        points = np.asarray(points, np.float32)
        if iris is not None and not np.isfinite(iris).all():
            iris = None  # a shot without irises: draw none rather than NaN circles
        e = a.embed(shots, points, iris)  # (1, N) mean over the K shots
        with torch.no_grad():
            psi = a.generator.project(e)  # (1, P)
        w0 = getattr(a.discriminator, "w0", None)
        w = (w0.detach().to(e) + e).reshape(1, -1) if w0 is not None else None  # w' = w0 + e_new
        person = Person(frames=np.asarray(shots), points=points, iris=iris, e=e, psi=psi, w=w)
        if self.mode == "ft":
            if self._content_loss is None:  # built once: the perceptual networks are large
                from ..training.losses import ContentLoss  # lazy: torch (CLI start-up)

                self._content_loss = ContentLoss(a.pm, a.cfg.loss, device=a.device)
            person = a.fine_tune(person, steps=self.finetune_steps, content_loss=self._content_loss,
                                 seed=video_seed(self.seed, video_id, len(shots)))
        return person

    def render(self, state, points, iris=None):
        if iris is not None and not np.isfinite(iris).all():
            iris = None
        return self.animator.render(state, np.asarray(points, np.float32), iris=iris)
