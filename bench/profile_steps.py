"""Where the time goes: torch.profiler over one meta-training step and over one animate batch.

    python bench/profile_steps.py                       # warp-128 (the shipped preset), CPU
    python bench/profile_steps.py --preset paper-256 --rows 20

1. **Training step** of ``--preset`` (its batch size and K) on a synthetic dataset of the preset's
   size (:func:`headpuppet.testing.make_dataset`): the step exactly as the training loop runs it
   (:func:`headpuppet.training.steps.train_step`), after ``--warmup`` steps. Printed: the step's
   wall time, its split into data, the E+G forward (once per step), D step, G step (the rest of G's
   loss and the backward, with the content-loss networks' share) and EMA,
   and the top operators by self CPU time.
2. **Animate**: one batch of 8 frames through ``Animator.render`` of the default model (weights/demo)
   at its default precision, with the same split (landmark images, source warp, G, to uint8) and
   the top operators; ``--animate-model paper-256 --animate-batch 1 --animate-calls 5`` profiles
   the paper's G (random weights) instead, over several calls.

Each section is one JSON line (machine, threads, load average), followed by the operator table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from _jsonl import config  # bench/ is on the path (the script's folder)


def _phases(prof, names) -> dict:
    """Wall ms of each ``record_function`` label (its CPU total, as the profiler timed it)."""
    out = {}
    for evt in prof.key_averages():
        if evt.key in names:
            out[evt.key] = round(evt.cpu_time_total / 1e3 / max(evt.count, 1), 1)
    return out


def training_step(preset: str, warmup: int, rows: int) -> None:
    from headpuppet.config import load_config
    from headpuppet.testing import make_dataset
    from headpuppet.training.loop import MetaTrainer
    from headpuppet.training.steps import train_step

    cfg = load_config(preset)
    cfg.train.num_workers, cfg.train.sample_every, cfg.train.checkpoint_every = 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", videos=max(4, cfg.train.batch_size), frames=cfg.train.k_shots + 4,
                            size=cfg.model.image_size)
        trainer = MetaTrainer(cfg, data, out_root=Path(tmp) / "runs", device="cpu")
        _, loader = trainer._loader(0)
        it = iter(loader)
        content = trainer.content_loss

        def step():
            with record_function("data"):
                batch = trainer._to_device(next(it))
            # train_step labels its parts "E+G forward", "D step" and "G step" itself
            train_step(trainer.nets, batch, trainer.opt_d, trainer.opt_g, content, trainer.cfg,
                       autocast=trainer.autocast)
            if trainer.ema is not None:
                with record_function("EMA"):
                    trainer._update_ema()

        for _ in range(warmup):
            step()
        t = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with record_function("step"):
                step()
        wall = time.perf_counter() - t
        # the content loss's networks, by module (their forward and backward both land in "G step")
        per_net = {}
        for name, net in content.nets.items():
            x = torch.zeros(cfg.train.batch_size, 3, cfg.model.image_size, cfg.model.image_size, requires_grad=True)
            pts = torch.rand(cfg.train.batch_size, 68, 2) * cfg.model.image_size * 0.5 + cfg.model.image_size * 0.25
            kw = {"points": pts} if getattr(net, "accepts_points", False) else {}
            t0 = time.perf_counter()
            sum(a.abs().mean() for a in net(x, **kw)).backward()
            per_net[name] = round((time.perf_counter() - t0) * 1e3, 1)
        trainer.close()
    print(json.dumps({"figure": "training_step", **config(preset=preset, batch=cfg.train.batch_size,
                                                             k=cfg.train.k_shots, size=cfg.model.image_size),
                      "wall_ms": round(wall * 1e3, 1),
                      "phases_ms": _phases(prof, {"data", "E+G forward", "D step", "G step", "EMA"}),
                      "content_nets_fwd_bwd_ms": per_net}), flush=True)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def animate_batch(rows: int, batch: int = 8, model_name: str = "demo", calls: int = 1) -> None:
    from animate import build_animator  # bench/animate.py: the default model, or a preset with random weights

    from headpuppet.media.imaging import read_image
    from headpuppet.plugins import make_plugin_manager

    faces = Path(os.environ.get("HEADPUPPET_FACES", Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"))
    photo = faces / "photos" / "fr_obama.jpg"
    if not photo.is_file():
        from skimage import data

        image = data.astronaut()
    else:
        image = read_image(photo)
    model, weights = build_animator(model_name, "cpu", make_plugin_manager())
    person = model.prepare_source([image])
    pts = np.repeat(person.points[:1], batch, 0) + np.linspace(-1, 1, batch, dtype=np.float32)[:, None, None]
    model.render(person, pts, batch_size=batch)  # warm-up: the folded copy of G, allocations
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            with record_function("render"):
                model.render(person, pts, batch_size=batch)
    wall = (time.perf_counter() - t) / calls
    print(json.dumps({"figure": "animate_batch", **config(model=model_name, weights=weights, batch=batch, calls=calls,
                                                             size=model.size, precision=model.precision),
                      "wall_ms": round(wall * 1e3, 1), "ms_per_frame": round(wall * 1e3 / batch, 2)}), flush=True)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="warp-128")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--skip-animate", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--animate-model", default="demo",
                    help="demo (weights/demo) or a preset name (random weights: timing only), e.g. paper-256")
    ap.add_argument("--animate-batch", type=int, default=8)
    ap.add_argument("--animate-calls", type=int, default=1, help="render calls profiled (shares over all)")
    args = ap.parse_args()
    if not args.skip_training:
        training_step(args.preset, args.warmup, args.rows)
    if not args.skip_animate:
        animate_batch(args.rows, args.animate_batch, args.animate_model, args.animate_calls)


if __name__ == "__main__":
    main()
