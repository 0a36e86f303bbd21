"""Meta-learning throughput: seconds per step and samples (episodes) per second.

Times the two updates of one meta-learning step (Zakharov et al. 2019, section 3.2: a D step on the
hinge loss, then an E+G step on L_CNT + L_ADV + L_MCH) on batches already on the device, after
warm-up steps; data loading (reading JPEGs, drawing landmark images) is timed separately per batch.
The dataset is made on the fly from jittered crops of scikit-image's astronaut at the preset's size.

The content loss is the preset's (VGG19 + VGGFace) when their weights are installed, else the
weight-free ``laplacian-pyramid`` stand-in (much cheaper than VGG; the script says which it used).

Model FLOPs per sample: every convolution / matmul of one whole training step (both updates,
forward and backward, perceptual networks included) counted by ``torch.utils.flop_counter`` (through
``bench/params.py``'s ``macs`` when present), divided by the batch. With ``--peak-tflops`` the implied
utilisation is ``FLOPs/sample * samples/s / peak``.

Prints one JSON object per line (notes go to stderr), each with ``machine``, ``cpus``, ``threads``,
``load``:

- ``train_step``: the configuration (``preset``, ``size``, ``ch``, ``max_ch``, ``emb_dim``, ``batch``,
  ``k_shots``, ``discriminator``, ``device``, ``device_name``, ``torch``, ``setting`` (the config's
  ``train.amp`` and ``train.channels_last``), ``precision`` and ``channels_last`` (what they resolved to
  here, as meta-train resolves them), ``content_loss``, ``params_m`` of E, G, D), then ``warmup``, ``steps``, every
  timed step's seconds (``step_s``), ``step_s_median``, ``samples_per_s`` (episodes of K+1 frames),
  and unless ``--no-flops``: ``gflop_per_sample``, ``achieved_tflops``, ``peak_tflops`` and
  ``pct_of_peak`` (null without ``--peak-tflops``);
- ``train_data_loading``: one process making batches (reading JPEGs, drawing landmark images):
  ``s_per_batch`` and ``samples_per_s``.

Usage::

    python bench/train.py                                   # small-128 on CPU
    python bench/train.py --preset warp-128 --perceptual preset --steps 15  # the shipped preset, its precision
    python bench/train.py --preset warp-128 --perceptual preset --amp none --no-channels-last  # in fp32
    python bench/train.py --preset paper-256 --device cuda --amp bf16 --peak-tflops 989
    python bench/train.py --steps 1 --warmup 0 --batch-size 1 --k-shots 1 --no-flops   # a quick check
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def _macs(fn) -> int:
    try:
        from params import macs  # helper's counter (bench/params.py)
    except ImportError:
        from torch.utils.flop_counter import FlopCounterMode

        def macs(f):
            with FlopCounterMode(display=False) as c:
                f()
            return c.get_total_flops() // 2
    return macs(fn)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=None, help="default: small-128 on CPU, paper-256 on CUDA")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=3, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--k-shots", type=int, default=None)
    ap.add_argument("--amp", default="preset", choices=["preset", "none", "bf16", "auto"],
                    help="default: the preset's train.amp (warp-128: auto, bf16 where the device computes it natively)")
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                    help="default: the preset's train.channels_last (auto: with bf16)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--perceptual", default="auto", choices=["auto", "preset", "laplacian-pyramid"])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--peak-tflops", type=float, default=None, help="device peak, for the utilisation figure")
    ap.add_argument("--no-flops", action="store_true")
    args = ap.parse_args()

    from headpuppet.config import load_config
    from headpuppet.data.episodes import EpisodeDataset, collate
    from headpuppet.data.format import open_dataset
    from headpuppet.errors import WeightsMissingError
    from headpuppet.training.losses import ContentLoss
    from headpuppet.models import build_networks, count_parameters
    from headpuppet.plugins import make_plugin_manager
    from headpuppet.devices import resolve_device
    from headpuppet.testing import make_dataset
    from headpuppet.training.steps import autocast_for, resolve_amp, train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    preset = args.preset or ("paper-256" if device.type == "cuda" else "small-128")
    cfg = load_config(preset)
    if args.batch_size:
        cfg.train.batch_size = args.batch_size
    if args.k_shots:
        cfg.train.k_shots = args.k_shots
    if args.amp != "preset":
        cfg.train.amp = args.amp
    if args.channels_last is not None:
        cfg.train.channels_last = args.channels_last
    amp_setting = f"amp {cfg.train.amp}, channels_last {cfg.train.channels_last}"
    args.amp, args.channels_last = resolve_amp(cfg.train.amp, cfg.train.channels_last, device)  # as meta-train runs
    pm = make_plugin_manager()

    perceptual = "preset"
    if args.perceptual == "laplacian-pyramid":
        perceptual = "laplacian-pyramid"
    try:
        if perceptual != "preset":
            raise WeightsMissingError("asked for the weight-free loss")
        content = ContentLoss(pm, cfg.loss, device=device)
    except WeightsMissingError as exc:
        if args.perceptual == "preset":
            raise
        if args.perceptual == "auto":
            print(f"note: {exc}", file=sys.stderr)
        cfg.loss.perceptual = {"laplacian-pyramid": 1.0}
        cfg.loss.perceptual_layers = {}
        content = ContentLoss(pm, cfg.loss, device=device)
        perceptual = "laplacian-pyramid (weight-free stand-in; VGG19+VGGFace weights absent)"
    else:
        perceptual = perceptual if perceptual != "preset" else " + ".join(cfg.loss.perceptual)

    S, B, K = cfg.model.image_size, cfg.train.batch_size, cfg.train.k_shots
    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp) / "ds", videos=args.videos, frames=K + 2, size=S)
        ds = EpisodeDataset(open_dataset(root), K, size=S, seed=0)
        t0 = time.perf_counter()
        batches = [collate([ds[(i, (i * B + j) % len(ds), 0)] for j in range(B)])
                   for i in range(args.warmup + args.steps)]
        load_s = (time.perf_counter() - t0) / len(batches)

    torch.manual_seed(0)
    nets = build_networks(cfg, len(ds), pm)
    mf = torch.channels_last if args.channels_last else torch.preserve_format
    for _, m in nets.items():
        m.to(device=device, memory_format=mf).train()
    betas = tuple(cfg.train.betas)
    opt_g = torch.optim.Adam(list(nets.embedder.parameters()) + list(nets.generator.parameters()),
                             lr=cfg.train.lr_g, betas=betas)
    opt_d = torch.optim.Adam(nets.discriminator.parameters(), lr=cfg.train.lr_d, betas=betas)
    ac = autocast_for(device, args.amp)

    def to_dev(b):
        return {k: (v.to(device).contiguous(memory_format=mf) if v.ndim == 4 else v.to(device))
                for k, v in b.items()}

    batches = [to_dev(b) for b in batches]

    def step(b):
        train_step(nets, b, opt_d, opt_g, content, cfg, autocast=ac)

    for b in batches[:args.warmup]:
        step(b)
    _sync(device)
    times = []
    for b in batches[args.warmup:]:
        t = time.perf_counter()
        step(b)
        _sync(device)
        times.append(time.perf_counter() - t)
    sec = sorted(times)[len(times) // 2]
    flops = None if args.no_flops else 2 * _macs(lambda: step(batches[-1])) / B

    from _jsonl import config, emit

    m = cfg.model
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    conf = dict(preset=preset, size=S, ch=m.ch, max_ch=m.max_ch, emb_dim=m.emb_dim, batch=B, k_shots=K,
                discriminator=m.discriminator, device=str(device), device_name=dev, torch=torch.__version__,
                setting=amp_setting, precision="bf16" if args.amp == "bf16" else "fp32",
                channels_last=args.channels_last,
                content_loss=perceptual, params_m={"E": round(count_parameters(nets.embedder) / 1e6, 3),
                                                   "G": round(count_parameters(nets.generator) / 1e6, 3),
                                                   "D": round(count_parameters(nets.discriminator) / 1e6, 3)})
    fields = dict(warmup=args.warmup, steps=len(times), step_s=[round(t, 4) for t in times],
                  step_s_median=round(sec, 4), samples_per_s=round(B / sec, 3))
    if flops is not None:
        achieved = flops * B / sec
        fields.update(gflop_per_sample=round(flops / 1e9, 3), achieved_tflops=round(achieved / 1e12, 4),
                      peak_tflops=args.peak_tflops,
                      pct_of_peak=round(100 * achieved / (args.peak_tflops * 1e12), 2) if args.peak_tflops else None)
    emit("train_step", config(**conf, **fields))
    emit("train_data_loading", config(preset=preset, size=S, batch=B, k_shots=K, processes=1,
                                      s_per_batch=round(load_s, 4), samples_per_s=round(B / load_s, 2)))


if __name__ == "__main__":
    main()
