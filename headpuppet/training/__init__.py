"""Meta-learning (Zakharov et al. 2019, section 3.2): the loop, its two update steps, checkpoints,
run folders and multi-process support. Fine-tuning (section 3.4) reuses :mod:`.steps` and
:mod:`.checkpoint`.

Public API::

    meta_train(cfg, data_root, out_root="runs", pm=None, resume=None, reporter=None, device=None,
               max_steps=None, raise_on_stop=False) -> Path  # the run folder
    load_checkpoint(path, device="cpu", pm=None) -> Checkpoint
    export(checkpoint, out_dir, dtype=torch.float16, include_discriminator=False) -> Path
    discriminator_step(nets, batch, opt_d, cfg, w=None, psi=None, ...) -> dict[str, float]
    generator_step(nets, batch, opt_g, content_loss, cfg, w=None, psi=None, use_match=True, ...) -> dict
"""

from .checkpoint import Checkpoint, export, load_checkpoint, save_checkpoint, save_generator_only
from .loop import MetaTrainer, meta_train
from .steps import autocast_for, discriminator_step, generate, generator_step

__all__ = ["Checkpoint", "MetaTrainer", "autocast_for", "discriminator_step", "export", "generate",
           "generator_step", "load_checkpoint", "meta_train", "save_checkpoint", "save_generator_only"]
