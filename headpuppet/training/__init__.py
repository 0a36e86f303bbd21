"""Meta-learning (Zakharov et al. 2019, section 3.2): a dataset folder and a config in -> a run folder
out (numbered, with ``config.yaml``, ``stats.jsonl``, ``samples/`` and checkpoints).

:mod:`.loop` (the loop), :mod:`.steps` (its two update steps), :mod:`.losses` (the paper's loss
terms), :mod:`.checkpoint` (safetensors per network + metadata), :mod:`.resume` (continuing a run),
:mod:`.runs` (run folders and stats), :mod:`.plots` (sample grids), :mod:`.guards` (failure paths and
signals), :mod:`.distributed` (DDP under ``torchrun``). Fine-tuning (section 3.4) reuses
:mod:`.steps`, :mod:`.losses` and :mod:`.checkpoint`.

Public API::

    meta_train(cfg, data_root, out_root="runs", pm=None, resume=None, reporter=None, device=None,
               max_steps=None, raise_on_stop=False) -> Path  # the run folder
    load_checkpoint(path, device="cpu", pm=None) -> Checkpoint
    export(checkpoint, out_dir, dtype=torch.float16, include_discriminator=False) -> Path
    train_step(nets, batch, opt_d, opt_g, content_loss, cfg, w=None, psi=None, ...) -> dict[str, float]
    discriminator_step(nets, batch, opt_d, cfg, w=None, psi=None, ...) -> dict[str, float]
    generator_step(nets, batch, opt_g, content_loss, cfg, w=None, psi=None, use_match=True, ...) -> dict
"""

from .checkpoint import Checkpoint, export, load_checkpoint, save_checkpoint
from .loop import MetaTrainer, meta_train
from .steps import autocast_for, discriminator_step, generate, generator_step, train_step

__all__ = ["Checkpoint", "MetaTrainer", "autocast_for", "discriminator_step", "export", "generate",
           "generator_step", "load_checkpoint", "meta_train", "save_checkpoint", "train_step"]
