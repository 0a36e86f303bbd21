"""What each part of the render fast path buys, new against old in ONE process.

    python bench/fast_path.py                               # default model (batch 8) and paper-256 (batch 1), bf16
    python bench/fast_path.py --models paper-256 --batch 1 --amp none --pairs 10
    python bench/fast_path.py --models demo --compiled      # torch.compile: with each of two parts and without

This machine's speed drifts by up to 2x within seconds, so separate runs of old and new code cannot be
compared; here the variants of G run alternately in one process, on the same inputs, and each call of a
variant is set against the mean of the baseline calls just before and after it. The baseline is the fold
of the previous fast path (spectral norm folded, channels-last, ``--amp``), without the six parts below;
the variants add them one at a time:

- ``upsample``: the up-sampling blocks' first convolution at the low resolution
  (:class:`headpuppet.models.blocks.UpsampleConv`);
- ``+ fused add``: residual sums fused into oneDNN's convolution (:func:`headpuppet.models.blocks.conv_add`);
- ``+ in-place ReLU`` (:func:`headpuppet.models.blocks.relu_of_norm`);
- ``+ strided down``: the down-sampling blocks' second convolution and average pooling as one
  strided 4x4 convolution (:func:`headpuppet.models.blocks.pooled_conv`);
- ``+ prepacked weights``: every convolution's weight reordered once for oneDNN
  (:class:`headpuppet.models.blocks.PackedConv2d`);
- ``+ fused norm ReLU``: a large bf16 sample's instance norm and ReLU as its statistics and one
  oneDNN pass (:func:`headpuppet.models.blocks.instance_norm`): the fast path as it renders now.

One JSON line per model and variant (machine, threads, load average): ``time_ratio_median`` (variant /
baseline; below 1 is faster) with its quartiles, ``ms_per_frame`` of both, and ``max_abs_diff`` of the
variant's output from the baseline's (G's output is in [-1, 1]). With ``--compiled``, the folds go
through ``torch.compile`` (inductor, frozen weights, as ``animate --compile``) instead: the compile's
fold with the strided down-sampling convolutions against the one without them, and with ``UpsampleConv``
against without it (three compiles, tens of seconds each).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from _jsonl import config  # bench/ is on the path (the script's folder)
from animate import FACES, _gen_inputs, build_animator


def _timer(amp: str, y, psi, src):
    def once(gen) -> tuple[float, torch.Tensor]:
        t = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            out = gen(y, psi=psi, **src)
        return time.perf_counter() - t, out
    return once


def _pair(baseline, variant) -> tuple[float, float, float]:
    """One baseline call, one variant call, one baseline call (each a function that returns its
    seconds): ``(variant / mean of the two baseline calls, that mean, the variant's time)``."""
    a = baseline()
    b = variant()
    c = baseline()
    return b / ((a + c) / 2), (a + c) / 2, b


def _row(name: str, batch: int, amp: str, variant: str, ratios: list[float], base: list[float], new: list[float],
         diff: float) -> str:
    q = statistics.quantiles(ratios, n=4)
    return json.dumps({"figure": "fast_path_part", **config(model=name, batch=batch, precision=amp, variant=variant,
                                                           pairs=len(ratios)),
                       "time_ratio_median": round(statistics.median(ratios), 3),
                       "time_ratio_quartiles": [round(q[0], 3), round(q[2], 3)],
                       "baseline_ms_per_frame": round(1000 * statistics.median(base) / batch, 2),
                       "variant_ms_per_frame": round(1000 * statistics.median(new) / batch, 2),
                       "max_abs_diff": round(diff, 4)})


def eager(animator, person, name: str, batch: int, amp: str, pairs: int) -> None:
    from headpuppet.fewshot.animator import fold_spectral_norm
    from headpuppet.models import blocks

    packed, y, psi, src = _gen_inputs(animator, person, batch, True, True, amp)  # the fold as render uses it
    dtype = torch.bfloat16 if amp == "bf16" else None
    old = fold_spectral_norm(animator.generator.eval(), dtype, upsample_at_low_res=False, strided_down=False)
    old.to(memory_format=torch.channels_last)
    up = fold_spectral_norm(animator.generator.eval(), dtype, strided_down=False).to(memory_format=torch.channels_last)
    down = fold_spectral_norm(animator.generator.eval(), dtype).to(memory_format=torch.channels_last)
    fused, relu, norm = blocks._FUSED_CONV_ADD, blocks.relu_of_norm, blocks._FUSED_NORM_RELU
    variants = {1: "upsample", 2: "upsample + fused add", 3: "upsample + fused add + in-place ReLU",
                4: "upsample + fused add + in-place ReLU + strided down",
                5: "upsample + fused add + in-place ReLU + strided down + prepacked weights",
                6: "upsample + fused add + in-place ReLU + strided down + prepacked weights + fused norm ReLU (now)"}
    folds = {0: old, 1: up, 2: up, 3: up, 4: down, 5: packed, 6: packed}

    def setup(v: int):
        blocks._FUSED_CONV_ADD = fused and v >= 2
        blocks.relu_of_norm = relu if v >= 3 else (lambda h, x: F.relu(h))
        blocks._FUSED_NORM_RELU = norm and v >= 6
        return folds[v]

    once = _timer(amp, y, psi, src)
    try:
        outs = {}
        for v in folds:
            once(setup(v))  # warm-up: allocations, kernels
            outs[v] = once(setup(v))[1].float()
        runs = {v: [] for v in variants}
        for _ in range(pairs):
            for v in variants:
                runs[v].append(_pair(lambda: once(setup(0))[0], lambda v=v: once(setup(v))[0]))
    finally:
        blocks._FUSED_CONV_ADD, blocks.relu_of_norm, blocks._FUSED_NORM_RELU = fused, relu, norm
    for v, label in variants.items():
        ratios, base, times = (list(col) for col in zip(*runs[v]))
        diff = float((outs[v] - outs[0]).abs().max())
        print(_row(name, batch, amp, label, ratios, base, times, diff), flush=True)


def compiled(animator, person, name: str, batch: int, amp: str, pairs: int) -> None:
    from headpuppet.fewshot.animator import compile_frozen, fold_spectral_norm

    _, y, psi, src = _gen_inputs(animator, person, batch, True, True, amp)
    dtype = torch.bfloat16 if amp == "bf16" else None
    # (upsample at low resolution, strided down): the compile's fold before this change, as animate
    # --compile makes it now, and with UpsampleConv as well
    kinds = {"before": (False, False), "now": (False, True), "upsample": (True, True)}
    fns = {k: compile_frozen(fold_spectral_norm(animator.generator.eval(), dtype, upsample_at_low_res=up,
                                                strided_down=down).to(memory_format=torch.channels_last))
           for k, (up, down) in kinds.items()}
    once = _timer(amp, y, psi, src)
    outs = {k: once(fn)[1].float() for k, fn in fns.items()}  # the compiles
    for fn in fns.values():
        once(fn)
    for base, new, label in (("before", "now", "compiled, strided down (against compiled without it)"),
                             ("now", "upsample", "compiled, strided down + upsample (against compiled without upsample)")):
        runs = [_pair(lambda: once(fns[base])[0], lambda: once(fns[new])[0]) for _ in range(pairs)]
        ratios, base_t, times = (list(col) for col in zip(*runs))
        print(_row(name, batch, amp, label, ratios, base_t, times, float((outs[new] - outs[base]).abs().max())),
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["demo", "paper-256"])
    ap.add_argument("--batch", type=int, nargs="+", default=None,
                    help="frames per G call, one per model (default: 8 for demo, 1 for presets)")
    ap.add_argument("--amp", default="bf16", choices=["bf16", "none"])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--compiled", action="store_true", help="compare compiled folds instead (a compile each)")
    args = ap.parse_args()
    from headpuppet.media.imaging import read_image
    from headpuppet.plugins import make_plugin_manager

    pm = make_plugin_manager()
    photo = read_image(FACES / "photos" / "fr_obama.jpg")
    batches = args.batch or [8 if m == "demo" else 1 for m in args.models]
    for name, batch in zip(args.models, batches):
        animator, _ = build_animator(name, "cpu", pm)
        person = animator.prepare_source([photo])
        (compiled if args.compiled else eager)(animator, person, name, batch, args.amp, args.pairs)


if __name__ == "__main__":
    main()
