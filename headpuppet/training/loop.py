"""The meta-learning loop (Zakharov et al. 2019, section 3.2; schedule of section 4).

Counts steps, not epochs. Each step draws ``batch_size`` K-shot episodes per process, runs one
discriminator update (hinge loss) then one embedder+generator update (``L_CNT + L_ADV + L_MCH``),
with separate Adam optimisers (E+G at ``lr_g``, D at ``lr_d``, ``betas`` from the config), and an
optional moving average of G's weights (``train.ema``).

A run lives in ``out_root/NNNNN-<preset>-k<K>/`` (see :mod:`headpuppet.training.runs`). Resume
(``resume=RUN or checkpoint``, :mod:`headpuppet.training.resume`) restores weights, optimisers, EMA,
the torch/numpy/python RNG states and the sampler position, so on one process N + M steps with a
resume in between equal N + M straight steps bit for bit. Under ``torchrun`` every rank resumes the
same weights, the same optimiser state and the same data order; each rank's RNG is re-derived from
``(seed, step, rank)`` (the checkpoint holds rank 0's).

SIGINT (Ctrl-C) and SIGTERM (:class:`headpuppet.training.guards.StopFlag`) finish the current step,
save a checkpoint and return; a second Ctrl-C aborts at once. With several ranks the stop flag is
agreed on by all-reduce each step so every rank stops at the same step.
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Config, from_dict, save_config
from ..data.episodes import EpisodeDataset, collate
from ..data.format import open_dataset
from ..errors import CheckpointError, ConfigError, HeadpuppetError, Interrupted
from ..models import build_networks
from ..models.warp_generator import needs_source, source_kwargs
from ..plugins import make_plugin_manager
from ..progress import NULL, Reporter
from . import checkpoint as ckpt
from .distributed import (EpisodeBatchSampler, any_rank, barrier, cleanup, init_distributed, mean_over_ranks,
                          wrap)
from .guards import (StopFlag, check_batch_memory, end_workers, fetch, half_made_iterator, one_line_failures,
                     worker_ignores_signals)
from .losses import ContentLoss
from .plots import plot_losses, sample_grid, save_grid
from .resume import pick_checkpoint, restore_with_fallback, resume_config, seed_all, setting_changes
from .runs import StatsWriter, describe, new_run_dir, read_stats
from .steps import autocast_for, generate, resolve_amp, train_step


@dataclass
class TrainNets:
    """The networks as the steps see them (``embedder``/``generator``/``discriminator`` may be DDP)."""

    embedder: torch.nn.Module
    generator: torch.nn.Module
    discriminator: torch.nn.Module


def _short(name: str) -> str:
    """``Loss/G/vgg19`` -> ``G.vgg19`` for the progress bar."""
    return name.replace("Loss/", "").replace("/", ".")


class MetaTrainer:
    """Meta-learning on one dataset; :func:`meta_train` is the one-call form.

    Args:
        cfg: resolved config (``None`` with ``resume``: the checkpoint's). On resume, ``model`` and
            ``loss`` must equal the checkpoint's; ``train`` (steps, intervals) is taken from ``cfg``.
        data_root: a preprocessed dataset folder.
        out_root: parent of run folders.
        pm: plugin manager (default: a fresh one).
        resume: a run folder or a checkpoint folder to continue (writes into its run folder).
        reporter: progress (rank 0 only); silent by default.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, a torch.device.
    """

    def __init__(self, cfg: Config | None, data_root, out_root="runs", pm=None, resume=None,
                 reporter: Reporter | None = None, device=None):
        if pm is None:
            pm = make_plugin_manager()
        self.pm = pm
        self._notes: list[str] = []  # said once the reporter exists
        self._candidates: list[Path] = []
        self.resume_folder, resume_meta = None, None
        if resume is not None:
            self._candidates, self.resume_folder, resume_meta, note = pick_checkpoint(resume)
            self._notes += [note] if note else []
        self.setting_changes: list[str] = []
        if resume_meta is not None:
            saved = from_dict(resume_meta["config"])
            cfg = resume_config(cfg, saved)
            self.setting_changes = setting_changes(cfg, saved)
        if cfg is None:
            raise ValueError("meta_train needs a config (or resume=)")
        self.cfg = cfg
        self.dist = init_distributed(device)
        self.device = self.dist.device
        self.reporter = (reporter or NULL) if self.dist.is_main else NULL
        tc = cfg.train
        if tc.batch_size < 1:
            raise ConfigError(f"train.batch_size must be at least 1, got {tc.batch_size}")
        check_batch_memory(cfg)
        for note in self._notes:
            self.reporter.warn(note)
        # train.amp / channels_last "auto": bf16 + channels-last where the device computes bf16 natively
        self.amp, self.channels_last = resolve_amp(tc.amp, tc.channels_last, self.device)
        if "auto" in (tc.amp, tc.channels_last):
            self.reporter.info(f"train.amp {tc.amp}, channels_last {tc.channels_last}: training in "
                               f"{'bf16 autocast' if self.amp == 'bf16' else 'fp32'}"
                               f"{', channels-last' if self.channels_last else ''} on {self.device}")
        self.autocast = autocast_for(self.device, self.amp)
        torch.set_float32_matmul_precision("high")

        # Perceptual weights are checked first: a missing VGG stops here, before any folder exists.
        self.content_loss = ContentLoss(pm, cfg.loss, device=self.device)

        if data_root is None:
            if resume_meta is None or not resume_meta.get("dataset"):
                raise HeadpuppetError("give the dataset folder (DATA); it is needed unless --resume names a run")
            data_root = resume_meta["dataset"]  # a resumed run reads the dataset it was trained on
        self.index = open_dataset(data_root)
        self.data = EpisodeDataset(self.index, tc.k_shots, size=cfg.model.image_size, iris=cfg.model.iris,
                                   seed=tc.seed, warp_source=tc.warp_source, flip=tc.flip)
        if resume_meta is not None and int(resume_meta.get("num_videos", -1)) != self.data.num_videos:
            raise CheckpointError(f"the checkpoint was trained on {resume_meta.get('num_videos')} videos, this "
                                  f"dataset has {self.data.num_videos}; resume on the same dataset")

        seed_all(tc.seed)  # identical initial weights on every rank (DDP also broadcasts rank 0's)
        nets = build_networks(cfg, self.data.num_videos, pm)
        self.raw = nets
        mf = torch.channels_last if self.channels_last else torch.preserve_format
        for _, m in nets.items():
            m.to(device=self.device, memory_format=mf)
        self.ema = None
        if tc.ema > 0:
            self.ema = copy.deepcopy(nets.generator).eval().requires_grad_(False)
        betas = tuple(tc.betas)
        self.opt_g = torch.optim.Adam(list(nets.embedder.parameters()) + list(nets.generator.parameters()),
                                      lr=tc.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(nets.discriminator.parameters(), lr=tc.lr_d, betas=betas)
        self.step = 0
        if self.resume_folder is not None:
            restore_with_fallback(self, self._candidates)
        else:
            seed_all(tc.seed + self.dist.rank)
        self.nets = TrainNets(wrap(nets.embedder, self.dist), wrap(nets.generator, self.dist),
                              wrap(nets.discriminator, self.dist))

        self.run_dir: Path | None = None
        if self.dist.is_main:
            if self.resume_folder is not None:
                self.run_dir = self.resume_folder.parent.parent
                if not (self.run_dir / "checkpoints").is_dir():
                    self.run_dir = new_run_dir(out_root, describe(cfg))  # resuming from a bare checkpoint
            else:
                self.run_dir = new_run_dir(out_root, describe(cfg))
            save_config(cfg, self.run_dir / "config.yaml")
            (self.run_dir / "samples").mkdir(exist_ok=True)
            self.stats = StatsWriter(self.run_dir / "stats.jsonl")
            self.stats.truncate_after(self.step)
        if self.dist.enabled:  # everyone learns the run folder (rank 0 made it)
            obj = [str(self.run_dir) if self.run_dir else None]
            torch.distributed.broadcast_object_list(obj, src=0)
            self.run_dir = Path(obj[0])
        self.preview = None

    # ----------------------------------------------------------------------------------- helpers
    def _loader(self, start_step: int):
        tc = self.cfg.train
        sampler = EpisodeBatchSampler(len(self.data), tc.batch_size, seed=tc.seed, rank=self.dist.rank,
                                      world_size=self.dist.world_size, start_step=start_step)
        workers = max(0, int(tc.num_workers))
        loader = torch.utils.data.DataLoader(
            self.data, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
            pin_memory=self.device.type == "cuda", persistent_workers=False,
            worker_init_fn=worker_ignores_signals if workers else None,
            prefetch_factor=2 if workers else None)
        return sampler, loader

    def _to_device(self, batch: dict) -> dict:
        mf = torch.channels_last if self.channels_last else torch.preserve_format
        out = {}
        for k, v in batch.items():
            v = v.to(self.device, non_blocking=True)
            if v.ndim == 4 and v.is_floating_point():
                v = v.contiguous(memory_format=mf)
            out[k] = v
        return out

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Warm-up (as TensorFlow's ExponentialMovingAverage with num_updates): a fixed 0.999 would
        # still weight the random initial G by 0.999^t (78% after 250 steps, 8% after 2500), so
        # the samples and short runs would show noise while G itself has learned.
        beta = min(self.cfg.train.ema, (1.0 + self.step) / (10.0 + self.step))
        for p_ema, p in zip(self.ema.parameters(), self.raw.generator.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - beta)
        for b_ema, b in zip(self.ema.buffers(), self.raw.generator.buffers()):
            b_ema.copy_(b)

    def networks_for_saving(self) -> dict[str, torch.nn.Module]:
        out = {"embedder": self.raw.embedder, "generator": self.raw.generator,
               "discriminator": self.raw.discriminator}
        if self.ema is not None:
            out["generator_ema"] = self.ema
        return out

    def save(self) -> Path | None:
        """Checkpoint at the current step (rank 0 writes; every rank waits for it)."""
        path = None
        if self.dist.is_main:
            state = {"step": self.step, "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                     "rng": ckpt.rng_state(self.device), "world_size": self.dist.world_size,
                     "sampler": {"seed": self.cfg.train.seed, "batch_size": self.cfg.train.batch_size,
                                 "position": list(self._sampler_pos(self.step))}}
            meta = ckpt.make_meta(self.cfg, self.step, self.data.num_videos, detector=self.index.detector,
                                  dataset=str(self.index.root), world_size=self.dist.world_size)
            path = ckpt.save_checkpoint(self.run_dir / "checkpoints", self.step, self.networks_for_saving(),
                                        meta, state=state, keep=self.cfg.train.keep_checkpoints)
        barrier(self.dist)
        return path

    def _sampler_pos(self, step: int) -> tuple[int, int]:
        s = EpisodeBatchSampler(len(self.data), self.cfg.train.batch_size, seed=self.cfg.train.seed,
                                rank=self.dist.rank, world_size=self.dist.world_size)
        return s.position(step)

    @torch.no_grad()
    def write_samples(self) -> Path:
        """``samples/step-NNNNNNN.png`` from the fixed preview episodes, and ``samples/losses.png``."""
        if self.preview is None:
            self.preview = self._to_device(self.data.preview_batch(4))
        b = self.preview
        E, G = self.raw.embedder, self.ema if self.ema is not None else self.raw.generator
        modes = (E.training, G.training)
        # eval mode: spectral-norm power iterations must not advance here, or sampling would
        # change training (and break bit-exact resume)
        E.eval(), G.eval()
        extra = None
        try:
            with self.autocast():
                if needs_source(G):  # warp-guided G: also show the warped shot and the blend mask
                    e, _ = E(b["shots"], b["shot_landmarks"])
                    parts = G(b["target_landmarks"], e=e, return_parts=True, **source_kwargs(G, b))
                    fake = parts["image"].float()
                    extra = [parts["warped"].float(), parts["mask"].float().expand(-1, 3, -1, -1) * 2 - 1]
                else:
                    fake = generate(TrainNets(E, G, None), b)[0].float()
        finally:
            E.train(modes[0]), G.train(modes[1])
        grid = sample_grid(b["shots"], b["target_landmarks"], fake, b["target"], extra)
        path = self.run_dir / "samples" / f"step-{self.step:07d}.png"
        save_grid(path, grid)
        records = read_stats(self.run_dir / "stats.jsonl")
        if records:
            plot_losses(records, self.run_dir / "samples" / "losses.png")
        return path

    # -------------------------------------------------------------------------------------- loop
    def run(self, max_steps: int | None = None) -> Path:
        """Train until ``train.steps`` (or ``max_steps`` more steps); returns the run folder."""
        tc = self.cfg.train
        end = tc.steps if max_steps is None else min(tc.steps, self.step + max_steps)
        if self.dist.is_main and self.data.skipped:
            self.reporter.warn(f"{len(self.data.skipped)} video(s) with fewer than 2 frames skipped")
        if self.dist.is_main and self.setting_changes:
            # config.yaml now holds the new weights; changes.jsonl keeps when each came in
            with open(self.run_dir / "changes.jsonl", "a") as f:
                f.write(json.dumps({"step": self.step, "changes": self.setting_changes}) + "\n")
            self.reporter.warn(f"resuming at step {self.step} with changed settings: {'; '.join(self.setting_changes)}")
        if self.dist.is_main and self.step == 0 and not self.resume_folder:
            self.reporter.info(f"run folder {self.run_dir}: {self.data.num_videos} videos, "
                               f"batch {tc.batch_size} x {self.dist.world_size} process(es), K={tc.k_shots}, "
                               f"{self.cfg.model.image_size}px, device {self.device}")
        sampler, loader = self._loader(self.step)
        stop = StopFlag()
        acc: dict[str, float] = {}
        n_acc, t_acc = 0, 0.0
        last_saved = self.step if self.resume_folder is not None else -1
        samples_per_step = tc.batch_size * self.dist.world_size
        for _, m in self.raw.items():
            m.train()
        it = None
        children = set(multiprocessing.active_children())
        try:
            with stop.installed(), self.reporter.task("meta-train", total=tc.steps) as task, one_line_failures(self):
                task.update(completed=self.step)
                try:
                    it = iter(loader)
                except BaseException as exc:  # workers may have started: shut them down below
                    it = half_made_iterator(exc)
                    raise
                while self.step < end:
                    t0 = time.perf_counter()
                    batch = self._to_device(fetch(it))
                    terms = train_step(self.nets, batch, self.opt_d, self.opt_g, self.content_loss, self.cfg,
                                       autocast=self.autocast)
                    if self.ema is not None:
                        self._update_ema()
                    self.step += 1
                    dt = time.perf_counter() - t0
                    if not all(math.isfinite(v) for v in terms.values()):
                        bad = sorted(k for k, v in terms.items() if not math.isfinite(v))
                        self.reporter.warn(f"non-finite loss at step {self.step}: {', '.join(bad)}")
                    for k, v in terms.items():
                        acc[k] = acc.get(k, 0.0) + v
                    n_acc, t_acc = n_acc + 1, t_acc + dt
                    task.advance(1, **{_short(k): v for k, v in terms.items()
                                       if k.startswith("Loss/G/") or k == "Loss/D/total"})
                    if self.step % tc.log_every == 0 or self.step == end:
                        self._log(acc, n_acc, t_acc, samples_per_step)
                        acc, n_acc, t_acc = {}, 0, 0.0
                    if self.dist.is_main and tc.sample_every > 0 and self.step % tc.sample_every == 0:
                        self.write_samples()
                    if tc.checkpoint_every > 0 and self.step % tc.checkpoint_every == 0:
                        self.save()
                        last_saved = self.step
                    if any_rank(stop.set, self.dist):
                        stop.set = True
                        break
            if last_saved != self.step:
                self.save()
            if self.dist.is_main:
                if stop.set:
                    self.reporter.info(f"stopped ({stop.reason or 'signal'}) at step {self.step}; checkpoint saved;"
                                       f" continue with: headpuppet meta-train --resume {self.run_dir}")
                elif not (tc.sample_every > 0 and self.step % tc.sample_every == 0):
                    self.write_samples()
        finally:
            # Workers ignore SIGINT/SIGTERM (so Ctrl-C reaches only this process), hence the
            # interpreter's exit handler cannot terminate them: shut them down explicitly, or a
            # lingering iterator (a traceback, a reference cycle) hangs the exit.
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
            del it, loader
            end_workers(children)  # any left (e.g. iter() failed after starting them): end them
        self.stopped = stop.set
        self.stop_reason = stop.reason
        return self.run_dir

    def _log(self, acc: dict, n: int, t: float, samples_per_step: int) -> None:
        if n == 0:
            return
        means = mean_over_ranks({k: v / n for k, v in acc.items()}, self.dist)
        if not self.dist.is_main:
            return
        rec = {"step": self.step, "time": time.time(), **means,
               "Progress/lr_g": self.opt_g.param_groups[0]["lr"], "Progress/lr_d": self.opt_d.param_groups[0]["lr"],
               "Timing/sec_per_step": t / n, "Timing/samples_per_sec": samples_per_step * n / max(t, 1e-9)}
        self.stats.write(rec)

    def close(self) -> None:
        cleanup(self.dist)


def meta_train(cfg: Config | None, data_root, out_root="runs", pm=None, resume=None,
               reporter: Reporter | None = None, device=None, max_steps: int | None = None,
               raise_on_stop: bool = False) -> Path:
    """Meta-learn E, G, D on the dataset at ``data_root``; returns the run folder.

    ``max_steps`` stops after that many steps of this call (the run can be resumed later);
    ``cfg.train.steps`` is the run's total. With ``raise_on_stop`` a run stopped by SIGINT/SIGTERM
    (checkpoint saved) raises :class:`~headpuppet.errors.Interrupted` (exit code 130 / 143 at the
    CLI) instead of returning as if finished. See :class:`MetaTrainer` for the other arguments.
    """
    trainer = MetaTrainer(cfg, data_root, out_root=out_root, pm=pm, resume=resume, reporter=reporter,
                          device=device)
    try:
        run = trainer.run(max_steps=max_steps)
    finally:
        trainer.close()
    if raise_on_stop and trainer.stopped:
        why = trainer.stop_reason or "SIGINT"
        code = 128 + int(getattr(signal, why, signal.SIGINT))
        raise Interrupted(f"stopped by {why} at step {trainer.step} (checkpoint saved); continue with "
                          f"`headpuppet meta-train --resume {run}`", exit_code=code)
    return run
