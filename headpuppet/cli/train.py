"""``headpuppet meta-train``: meta-learning on a preprocessed dataset (Zakharov et al. 2019, section 3.2).

Precedence: flags > ``--set key=value`` > ``--config FILE`` > ``--preset``. With ``--resume RUN`` the
config comes from the checkpoint, and ``--set``/flags may change the schedule (``--steps``, intervals,
learning rates) but not the model or the losses. Multi-GPU: ``torchrun --nproc-per-node 8 -m
headpuppet meta-train DATA ...`` (only rank 0 prints and writes).
"""

from __future__ import annotations

import math
from pathlib import Path

import typer

from ..devices import resolve_device
from ..outputs import check_not_input, check_writable_dir
from ._common import RichReporter, handle_errors

_PRESETS_HELP = "Config preset: paper-256 (the paper's model) or small-128 (a laptop-sized one)."


def resolve_config(preset: str | None, config_file: str | None, sets: list[str], flags: dict,
                   resume: str | None = None):
    """The run's :class:`Config` from the command line (``None`` fields of ``flags`` are unset): the
    checkpoint's config when resuming without ``--preset``/``--config``, else the preset (paper-256
    unless a config file is given), layered by :func:`headpuppet.config.load_config`."""
    from ..config import load_config  # lazy: yaml (+20 ms), ..training torch (+1.4 s) at CLI start-up (measured)
    from ..training.resume import pick_checkpoint

    saved = None
    if resume is not None and preset is None and config_file is None:
        # the first readable checkpoint: a damaged latest makes the trainer fall back, so do we
        saved = pick_checkpoint(resume)[2]["config"]
    elif preset is None and config_file is None:
        preset = "paper-256"
    return load_config(preset, config_file, list(sets), flags=flags, saved=saved)


def _check_ema(value: float | None) -> float | None:
    if value is not None and not (math.isfinite(value) and 0 <= value < 1):
        raise typer.BadParameter(f"{value} is not a decay in [0, 1) (e.g. 0.999; 0 turns it off)")
    return value


def register(app: typer.Typer, state) -> None:
    @app.command("meta-train", rich_help_panel="Pipeline")
    @handle_errors
    def meta_train_cmd(
        data: Path = typer.Argument(None, help="A dataset folder written by `headpuppet preprocess` "
                                               "(optional with --resume: the run's own dataset)."),
        preset: str = typer.Option(None, "--preset", help=_PRESETS_HELP + " Default paper-256."),
        config: str = typer.Option(None, "--config", help="YAML file of config keys, applied over the preset."),
        set_: list[str] = typer.Option([], "--set", help="Override one key, e.g. --set loss.fm=5 (repeatable)."),
        steps: int = typer.Option(None, "--steps", min=1, help="Total training steps of the run (train.steps)."),
        out: Path = typer.Option(Path("runs"), "--out", help="Parent folder of numbered run folders."),
        resume: str = typer.Option(None, "--resume", help="Continue a run folder (its latest checkpoint) "
                                                          "or a checkpoint folder."),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
        batch_size: int = typer.Option(None, "--batch-size", min=1, help="Episodes per step per process."),
        k_shots: int = typer.Option(None, "--k-shots", min=1, help="Frames per episode for the embedder (K)."),
        amp: str = typer.Option(None, "--amp", help="Mixed precision: none, bf16 (autocast) or auto (bf16 "
                                                     "where the device computes it natively) \\[default: the "
                                                     "preset's train.amp]."),
        channels_last: bool = typer.Option(None, "--channels-last/--no-channels-last",
                                           help="channels_last memory format \\[default: the preset's "
                                                "train.channels_last; auto: with bf16]."),
        ema: float = typer.Option(None, "--ema", callback=_check_ema, help="Keep a moving average of G's weights with this decay "
                                                      "(e.g. 0.999); 0 turns it off."),
        seed: int = typer.Option(None, "--seed", min=0, max=2**32 - 1, help="Seed of initial weights and data order."),
        workers: int = typer.Option(None, "--workers", min=0, help="DataLoader worker processes per rank."),
        max_steps: int = typer.Option(None, "--max-steps", min=1, help="Stop after this many steps of this "
                                                                "invocation (resume later)."),
    ) -> None:
        """Meta-learn embedder, generator and discriminator on a preprocessed dataset.

        Writes runs/NNNNN-<preset>-k<K>/ with config.yaml, stats.jsonl, samples/ and checkpoints/.
        Ctrl-C saves a checkpoint; continue with --resume.
        """
        from ..training.distributed import env_world  # lazy: torch, +1.4 s on `headpuppet --help` (measured)
        from ..training.loop import meta_train

        if amp is not None and amp not in ("none", "bf16"):
            raise typer.BadParameter("must be none or bf16", param_hint="--amp")
        resolve_device(device, env_world()[2])  # an unknown or absent device: one line, before any work
        flags = {"train.steps": steps, "train.batch_size": batch_size, "train.k_shots": k_shots,
                 "train.amp": amp, "train.channels_last": channels_last, "train.ema": ema,
                 "train.seed": seed, "train.num_workers": workers}
        cfg = resolve_config(preset, config, set_, flags, resume)
        rank = env_world()[0]
        if rank == 0:
            written = Path(resume) if resume is not None and (Path(resume) / "checkpoints").is_dir() else out
            check_not_input(written, [("dataset", data), ("config file", config)], "--out", contains=False)
            check_writable_dir(written, "--out" if written == out else "--resume")
        reporter = RichReporter(disable=rank != 0)
        run = meta_train(cfg, data, out_root=out, pm=state.pm, resume=resume, reporter=reporter,
                         device=device, max_steps=max_steps, raise_on_stop=True)
        if rank == 0:
            typer.echo(f"run folder: {run}")
