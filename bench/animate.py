"""Benchmark of ``headpuppet animate``: ms per frame of G alone, and frames/s end to end
(decode, landmarks, G, encode), for the demo checkpoint (or a random small-128 model when
weights/demo is absent) and for the paper-256 preset (random weights: timing only): the plain fp32
path, the fast path (spectral norm folded) in fp32 and bf16, bf16 + channels_last; G's share of the
machine's own 3x3-convolution throughput measured in the same run; the bf16 fast path's difference
from the fp32 plain path; on CPU and on CUDA when available.

    python bench/animate.py                      # everything that applies here
    python bench/animate.py --models paper-256 --devices cpu --batch 1 --no-end-to-end   # issue 11's figure

Prints one JSON object per line (notes go to stderr), each with ``machine``, ``cpus``, ``threads``,
``load`` (the load average: on a shared machine the figures depend on it), then ``model``,
``weights`` (the checkpoint, or RANDOM weights: timing only), ``size``, ``g_params_m``, ``device``,
``torch``, ``batch``:

- ``animate_bf16_fidelity``, per model and device: ``mean_abs_diff_255`` and ``max_abs_diff_255``
  of the bf16 fast path's frames from the fp32 plain path's (0-255), and ``animator_precision``
  (what the animator's 'auto' precision chose);
- ``animate_generator``, per model, device and ``mode`` (fp32 plain, fp32 folded, fp32 folded
  ch_last, bf16 folded, bf16 folded ch_last, and fp32 / bf16 folded ch_last compiled, G through
  ``torch.compile`` as ``animate --compile`` runs it, unless ``--no-compile``; also as ``precision``,
  ``folded``, ``channels_last``, ``compiled``): G alone, ``ms_per_frame`` (below), ``first_call_s``
  (the first call: the compile for a compiled mode), ``frames_per_s``, ``gflop_per_frame``
  (model FLOPs of one G pass, as the model defines it), ``achieved_gflops``, ``conv_probe_gflops`` (the machine's own 3x3
  convolution, 64 -> 64 channels at 64x64, batch 8, in the same precision and memory format) and
  ``pct_of_conv_peak`` = achieved / probe. A shared machine's speed drifts (here up to 2x within
  seconds), so each mode runs ``--pairs`` pairs of "probe, then one G call", every G call set
  against the probe just before it: ``pct_of_conv_peak`` is the median of the pairs' ratios (with
  its ``pct_of_conv_peak_quartiles``), ``ms_per_frame`` the median G call (``ms_per_frame_min`` the
  fastest) and ``conv_probe_gflops`` the median probe;
  ``fast_phase_*`` and ``slow_phase_*`` (:func:`by_phase`): the pairs, median ms and median
  percentage of the pairs taken while the machine was fast (the probe at 0.8x or more of the highest
  probe in that precision in any of the model's modes) and of the others (so a model's
  ``animate_generator`` lines come once all its modes have run);
  ``best_conv_probe_gflops`` and ``pct_of_best_conv_peak`` against the faster of the two memory
  formats' probes in that precision (the stricter figure); ``executed_gflop_per_frame`` and
  ``executed_pct_of_conv_peak``: the same for the FLOPs the mode computes (a folded G runs its
  up-sampling convolutions at the low resolution and pools as it convolves in its down-sampling
  blocks: the same map in fewer FLOPs, so its model-FLOP figure is the higher one; a compiled G
  does the second only); ``error`` instead when the mode fails here;
- ``animate_end_to_end``, per folded mode but the compiled ones (unless ``--no-end-to-end``):
  ``frames_per_s`` of the whole render (mediapipe landmarks, G, H.264 encode) on the first ``--frames`` frames of
  ``--driver``, and its split in seconds (``landmarks_s``, ``render_s``, ...).

Random weights do not change the cost of a forward pass, so they are fine for timing.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("HEADPUPPET_FACES", ROOT.parent / "shared" / "data" / "faces"))


def build_animator(name: str, device: str, pm):
    """``(animator, description)`` for "demo" (weights/demo, else random small-128) or a preset name."""
    from headpuppet.config import load_config
    from headpuppet.fewshot.animator import Animator, default_checkpoint
    from headpuppet.models import build_networks

    if name == "demo":
        demo = default_checkpoint()
        if demo.exists():
            return Animator.from_checkpoint(demo, device=device, pm=pm), f"demo checkpoint {demo}"
        name, note = "small-128", "weights/demo absent: small-128 preset, RANDOM weights (timing only)"
    else:
        note = f"{name} preset, RANDOM weights (timing only)"
    cfg = load_config(name)
    torch.manual_seed(0)
    nets = build_networks(cfg, 1, pm)
    return Animator(cfg, nets.generator, nets.embedder, nets.discriminator, device=device, pm=pm,
                    source=f"random {name}"), note


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _gen_inputs(animator, person, batch: int, channels_last: bool, fast: bool, amp: str = "none",
                compiled: bool = False):
    """G (folded when ``fast``, as the animator renders: bf16 weights for bf16; through
    ``torch.compile`` when ``compiled``), and its inputs for ``batch`` frames: ``y``, ``psi`` and the source."""
    gen = animator.generator.eval()
    plain = gen
    if fast:
        gen = animator._folded(gen, amp == "bf16", channels_last)
    else:
        gen.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    pts = np.repeat(person.points[:1], batch, 0)
    y = animator.landmark_images(pts)
    if channels_last:
        y = y.contiguous(memory_format=torch.channels_last)
    src = animator.source_kwargs(gen, person, pts)
    if compiled:
        gen = animator._compiled(plain, amp == "bf16", channels_last).fn
    return gen, y, person.psi.expand(batch, -1), src


def time_generator(animator, person, batch: int, amp: str, channels_last: bool, pairs: int,
                   fast: bool = False, compiled: bool = False) -> tuple[list[tuple[float, float, float]], float]:
    """``(pairs, first call s)``: after one warm-up call (with ``compiled``, the compile) and one more,
    ``pairs`` times "probe the conv throughput of both memory formats, then one G call" ->
    ``(ms per frame, probe GFLOP/s in G's format, the faster format's probe GFLOP/s)``. A shared
    machine's speed drifts (here up to 2x within seconds): each G call is set against the probe taken
    just before it. Landmark images and source tensors are prepared outside the timed region."""
    gen, y, psi, src = _gen_inputs(animator, person, batch, channels_last, fast, amp, compiled)
    dev = animator.device.type

    def once() -> float:
        sync(dev)
        t = time.perf_counter()
        with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=amp == "bf16"):
            gen(y, psi=psi, **src)
        sync(dev)
        return time.perf_counter() - t

    first = once()  # allocations, kernels; the compile
    once()
    out = []
    for _ in range(pairs):
        probe = {f: conv_probe(animator.device.type, amp, f, repeats=3) for f in (False, True)}
        out.append((1000 * once() / batch, probe[channels_last], max(probe.values())))
    if not fast:
        gen.to(memory_format=torch.contiguous_format)  # the model itself, as it was
    return out, first


#: a pair belongs to the machine's fast phase when its probe read at least this share of the highest
#: probe of the model's modes in that precision (here the probe reads about 750 or about 1500 GFLOP/s)
FAST_PHASE = 0.8


def pct_of_probe(ms: float, probe: float, gflop: float) -> float:
    """A G call of ``ms`` milliseconds for ``gflop`` GFLOP as a percentage of ``probe`` GFLOP/s."""
    return 100 * gflop / (ms / 1000) / probe


def by_phase(pairs: list[tuple[float, float, float]], gflop: float, top: float | None = None) -> dict:
    """``pairs`` (from :func:`time_generator`) split by the machine's phase: ``fast`` the pairs whose
    probe read at least :data:`FAST_PHASE` of ``top`` (``main`` passes the highest probe of all the
    model's modes in that precision; default: the highest among ``pairs``), ``slow`` the others ->
    ``{phase_top_probe_gflops, fast_phase_pairs, fast_phase_ms_per_frame, fast_phase_pct_of_conv_peak,
    slow_phase_...}`` (medians; None where a phase has no pair). A G call is cheap against a slow
    probe and dear against a fast one, so one median over a run that changed phase says little of
    either. A run that stayed in one phase has only "fast" pairs: ``phase_top_probe_gflops`` says
    which phase that was."""
    top = max(p for _, p, _ in pairs) if top is None else top
    out = {"phase_top_probe_gflops": round(top, 1)}
    for phase, sel in (("fast", [x for x in pairs if x[1] >= FAST_PHASE * top]),
                       ("slow", [x for x in pairs if x[1] < FAST_PHASE * top])):
        out[f"{phase}_phase_pairs"] = len(sel)
        out[f"{phase}_phase_ms_per_frame"] = round(float(np.median([x[0] for x in sel])), 2) if sel else None
        out[f"{phase}_phase_pct_of_conv_peak"] = (
            round(float(np.median([pct_of_probe(x[0], x[1], gflop) for x in sel])), 1) if sel else None)
    return out


def _conv_pointwise_flop(*args, out_shape=None, **kwargs) -> int:
    """FLOPs of oneDNN's convolution with fused element-wise ops (``mkldnn._convolution_pointwise``;
    its ``binary`` form is :func:`headpuppet.models.blocks.conv_add`), which torch's FLOP counter does
    not know: the convolution's (2 per multiply-add); the fused add is not counted. The weight is
    the third argument of the binary form (x, other, W, ...; its ninth is the op's name), the second
    of the plain one (x, W, ...)."""
    w_shape = args[2] if len(args) > 8 and isinstance(args[8], str) else args[1]
    out_numel = 1
    for n in out_shape:
        out_numel *= n
    return 2 * out_numel * w_shape[1] * w_shape[2] * w_shape[3]


# the counter looks ops up by overload packet
_FUSED_CONV_FLOPS = {torch.ops.mkldnn._convolution_pointwise: _conv_pointwise_flop} \
    if hasattr(torch.ops.mkldnn, "_convolution_pointwise") else {}


def generator_gflop(animator, person, batch: int, folded: bool = False, compile_fold: bool = False) -> float:
    """Model FLOPs of one G pass per frame (convolutions, linear layers, attention matmuls), in GFLOP:
    of the model as defined (the plain G); with ``folded``, what the fast path executes instead
    (its up-sampling convolutions run at the low resolution, :class:`headpuppet.models.blocks.UpsampleConv`,
    and its down-sampling ones pool as they go, :func:`headpuppet.models.blocks.pooled_conv`:
    fewer FLOPs for the same map); with ``compile_fold`` too, what the fold that ``--compile``
    compiles executes (the down-sampling part only).

    torch's FLOP counter counts convolutions and matmuls but not (in torch 2.13) the CPU's fused
    attention kernel, so attention is counted here from its own sizes: q k^T with C/8 query and key
    channels, then the C/2 value channels, per :class:`headpuppet.models.blocks.SelfAttention` call.
    The zeros that pad q and k to the value's size for the fused kernel are work the machine does,
    not model FLOPs. Whatever the counter gives for attention ops is replaced by that figure. The
    plain G's spectral norms (one matrix-vector product per layer in eval mode) are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    from headpuppet.models.blocks import SelfAttention

    gen, y, psi, src = _gen_inputs(animator, person, batch, False, folded)
    if folded and compile_fold:
        gen = animator._folded(animator.generator.eval(), for_compile=True)
    attention = []

    def hook(module, inputs, output):
        b, _, h, w = inputs[0].shape
        qk, vc = module.query.out_channels, module.value.out_channels
        attention.append(2 * b * (h * w) ** 2 * (qk + vc))  # q k^T and attn v; 2 FLOPs a multiply-add

    handles = [m.register_forward_hook(hook) for m in gen.modules() if isinstance(m, SelfAttention)]
    try:
        # no_grad, not inference_mode: the counter's module tracking fails on the plain G's
        # parametrised (spectral-norm) weights in inference mode
        with FlopCounterMode(display=False, custom_mapping=_FUSED_CONV_FLOPS) as counter, torch.no_grad():
            gen(y, psi=psi, **src)
    finally:
        for h in handles:
            h.remove()
    left_out = sum(n for op, n in counter.get_flop_counts().get("Global", {}).items()
                   if "scaled_dot_product" in str(op) or str(op).split(".")[-2:-1] in (["mv"], ["dot"], ["vdot"]))
    return (counter.get_total_flops() - left_out + sum(attention)) / batch / 1e9


def conv_probe(device: str, amp: str, channels_last: bool, repeats: int = 5) -> float:
    """The machine's own 3x3-convolution throughput (GFLOP/s): 64 -> 64 channels at 64x64, batch 8,
    the same precision and memory format; the ceiling a convolutional G can approach."""
    x = torch.randn(8, 64, 64, 64, device=device)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device).eval()
    if channels_last:
        x, conv = x.contiguous(memory_format=torch.channels_last), conv.to(memory_format=torch.channels_last)
    times = []
    for i in range(repeats + 1):
        sync(device)
        t = time.perf_counter()
        with torch.inference_mode(), torch.autocast(torch.device(device).type, dtype=torch.bfloat16,
                                                    enabled=amp == "bf16"):
            conv(x)
        sync(device)
        if i:
            times.append(time.perf_counter() - t)
    flops = 2 * 8 * 64 * 64 * 64 * 64 * 9
    return flops / float(np.median(times)) / 1e9


def end_to_end(animator, person, driver, detector, amp: str, channels_last: bool,
               batch: int) -> tuple[int, float, dict]:
    """``(frames, seconds, timings)`` of one ``render_video`` of ``driver``."""
    from headpuppet.fewshot.pipeline import render_video

    with tempfile.TemporaryDirectory() as tmp:
        res = render_video(animator, person, driver, Path(tmp) / "out.mp4", detector=detector, batch_size=batch,
                           amp=amp, channels_last=channels_last)
    return res.frames, res.seconds, res.timings


def fidelity(animator, person, batch: int) -> tuple[float, float]:
    """Mean and max absolute difference (0-255) of the bf16 fast path's frames from the fp32 plain path's."""
    pts = person.points[:1] + np.linspace(-2, 2, batch, dtype=np.float32)[:, None, None]
    ref = animator.render(person, pts, amp="fp32", fast=False).astype(np.int16)
    out = animator.render(person, pts, amp="bf16", fast=True).astype(np.int16)
    d = np.abs(out - ref)
    return float(d.mean()), float(d.max())


# (amp, channels_last, folded, torch.compile)
MODES = (("none", False, False, False), ("none", False, True, False), ("none", True, True, False),
         ("bf16", False, True, False), ("bf16", True, True, False), ("none", True, True, True),
         ("bf16", True, True, True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["demo", "paper-256"])
    ap.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda when available")
    ap.add_argument("--batch", type=int, default=8, help="frames per G pass")
    ap.add_argument("--pairs", type=int, default=15, help="probe-then-G pairs per mode (medians reported)")
    ap.add_argument("--frames", type=int, default=16, help="driver frames for the end-to-end figure")
    ap.add_argument("--source", default=str(FACES / "photos" / "fr_obama.jpg"))
    ap.add_argument("--driver", default=str(FACES / "videos" / "dtk_m030_happy.mp4"))
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--no-end-to-end", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile modes (each compiles "
                    "for tens of seconds; the first run on a machine, with a cold cache, longest)")
    args = ap.parse_args()

    from _jsonl import config, emit, note

    from headpuppet.fewshot.sources import open_driver
    from headpuppet.media.imaging import read_image
    from headpuppet.media.video import VideoWriter, read_frames
    from headpuppet.models import count_parameters
    from headpuppet.plugins import make_plugin_manager, registry

    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    note(f"# headpuppet animate benchmark  torch {torch.__version__}  python {platform.python_version()}  "
         f"{platform.processor() or platform.machine()}; CUDA: "
         f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'not available here (GPU rows skipped)'}")
    pm = make_plugin_manager()
    detector = registry(pm, "landmarks").create("mediapipe")
    source = read_image(args.source)

    driver = None
    tmpdir = tempfile.TemporaryDirectory()
    if not args.no_end_to_end:
        short = Path(tmpdir.name) / "driver.mp4"
        with VideoWriter(short, open_driver(args.driver).fps) as w:
            for f in read_frames(args.driver, max_frames=args.frames):
                w.write(f)
        driver = open_driver(short)
        note(f"# end to end: source {Path(args.source).name}, driver first {driver.num_frames} frames of "
             f"{Path(args.driver).name} ({driver.width}x{driver.height}), relative mode, smoothing on, "
             f"mediapipe landmarks, H.264 encode; batch {args.batch}")
    note(f"# G alone: batch {args.batch}, {args.pairs} pairs of (conv probe, one G call) after two warm-ups")
    for name in args.models:
        for device in devices:
            animator, weights = build_animator(name, device, pm)
            person = animator.prepare_source([source], detector=detector)
            cfg = dict(model=name, weights=weights, size=animator.size,
                       g_params_m=round(count_parameters(animator.generator) / 1e6, 2), device=device,
                       torch=torch.__version__, batch=args.batch)
            note(f"# {name} on {device}: {weights}")
            gflop = generator_gflop(animator, person, args.batch)
            executed = generator_gflop(animator, person, args.batch, folded=True)
            executed_compiled = generator_gflop(animator, person, args.batch, folded=True, compile_fold=True)
            mean_d, max_d = fidelity(animator, person, args.batch)
            emit("animate_bf16_fidelity", config(**cfg, compared="bf16 folded vs fp32 plain",
                                                 animator_precision=str(animator.precision),
                                                 mean_abs_diff_255=round(mean_d, 3), max_abs_diff_255=max_d))
            timed = []  # (precision, pairs, fields): emitted once every mode has run (by_phase's top)
            for amp, cl, fast, comp in MODES:
                if comp and args.no_compile:
                    continue
                precision = "fp32" if amp == "none" else "bf16"
                mode = (precision + (" folded" if fast else " plain") + (" ch_last" if cl else "")
                        + (" compiled" if comp else ""))
                row = dict(cfg, mode=mode, precision=precision, folded=fast, channels_last=cl, compiled=comp)
                try:
                    pairs, first = time_generator(animator, person, args.batch, amp, cl, args.pairs,
                                                  fast=fast, compiled=comp)
                except Exception as exc:  # e.g. a CPU without bf16 kernels for some op; no C++ compiler
                    emit("animate_generator", config(**row, error=str(exc).splitlines()[0]))
                    continue
                ms = float(np.median([x[0] for x in pairs]))
                pct = [pct_of_probe(x[0], x[1], gflop) for x in pairs]
                pct_best = [pct_of_probe(x[0], x[2], gflop) for x in pairs]
                computed = (executed_compiled if comp else executed) if fast else gflop
                timed.append((precision, pairs, config(
                    **row, pairs=args.pairs, ms_per_frame=round(ms, 2), frames_per_s=round(1000 / ms, 2),
                    ms_per_frame_min=round(min(x[0] for x in pairs), 2), first_call_s=round(first, 2),
                    gflop_per_frame=round(gflop, 3), achieved_gflops=round(gflop / (ms / 1000), 1),
                    conv_probe_gflops=round(float(np.median([x[1] for x in pairs])), 1),
                    pct_of_conv_peak=round(float(np.median(pct)), 1),
                    pct_of_conv_peak_quartiles=[round(float(q), 1) for q in np.percentile(pct, [25, 75])],
                    best_conv_probe_gflops=round(float(np.median([x[2] for x in pairs])), 1),
                    pct_of_best_conv_peak=round(float(np.median(pct_best)), 1),
                    executed_gflop_per_frame=round(computed, 3),
                    executed_pct_of_conv_peak=round(float(np.median(pct)) * computed / gflop, 1))))
                if driver is not None and fast and not comp:
                    frames, secs, split = end_to_end(animator, person, driver, detector, amp, cl, args.batch)
                    emit("animate_end_to_end", config(
                        **row, driver=Path(args.driver).name, driver_frames=driver.num_frames,
                        driver_px=driver.width, detector="mediapipe", frames=frames, wall_s=round(secs, 3),
                        frames_per_s=round(frames / secs, 2),
                        **{f"{k}_s": round(v, 3) for k, v in split.items()}))
            for precision, pairs, fields in timed:
                top = max(x[1] for prec, ps, _ in timed if prec == precision for x in ps)
                emit("animate_generator", {**fields, **by_phase(pairs, gflop, top)})
    tmpdir.cleanup()


if __name__ == "__main__":
    main()
