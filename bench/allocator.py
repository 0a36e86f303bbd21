"""What glibc's malloc setting (:func:`headpuppet.devices.tune_allocator`) buys, with and without it.

    python bench/allocator.py                      # 4 rounds: the default model's G and a 20-step fine-tune
    python bench/allocator.py --rounds 6 --finetune-steps 0

malloc's settings belong to a process, so each measurement is a fresh child process: one with the
setting (what ``headpuppet`` commands and the Python API use) and one with glibc's default
(``HEADPUPPET_MALLOC=default``), alternately, ``--rounds`` times. Each child loads the default model
(weights/demo; a random small-128 G where it is absent), embeds a photo, then times

- ``g``: 30 calls of G at batch 8 after 3 warm-ups, in the animator's precision on its fast path
  (as ``animate`` renders): wall, user and system CPU ms per frame, and page faults per call;
- ``finetune``: ``--finetune-steps`` steps of fine-tuning on the photo (skipped with 0): wall seconds
  and page faults per step.

One JSON line per child (``figure: allocator_run``, ``malloc``: ``tuned`` or ``default``) and one per
measure (``figure: allocator_ratio``): the median over rounds of tuned / default of the same round,
with the rounds' ratios (below 1: the setting is faster). The machine's speed drifts between
minutes here, so only the ratios of neighbouring children mean much.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("HEADPUPPET_FACES", ROOT.parent / "shared" / "data" / "faces"))


def child(photo: str, steps: int) -> None:
    import resource
    import time

    from _jsonl import config, emit
    from animate import _gen_inputs, build_animator
    from fast_path import _timer
    from headpuppet.devices import tune_allocator
    from headpuppet.media.imaging import read_image
    from headpuppet.plugins import make_plugin_manager

    tuned = tune_allocator()
    animator, weights = build_animator("demo", "cpu", make_plugin_manager())
    person = animator.prepare_source([read_image(photo)])
    batch = 8
    amp = "bf16" if animator.precision == "bf16" else "none"
    gen, y, psi, src = _gen_inputs(animator, person, batch, True, True, amp)
    once = _timer(amp, y, psi, src)
    for _ in range(3):
        once(gen)
    calls = 30
    r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(calls):
        once(gen)
    wall, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    frames = calls * batch
    row = dict(malloc="tuned" if tuned else "default", weights=weights, precision=str(animator.precision), batch=batch,
               g_ms_per_frame=round(1000 * wall / frames, 3),
               g_user_ms_per_frame=round(1000 * (r1.ru_utime - r0.ru_utime) / frames, 3),
               g_sys_ms_per_frame=round(1000 * (r1.ru_stime - r0.ru_stime) / frames, 3),
               g_page_faults_per_call=round((r1.ru_minflt - r0.ru_minflt) / calls, 1))
    if steps and animator.discriminator is not None:
        animator.fine_tune(person, 2)  # warm-up
        r0, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        animator.fine_tune(person, steps)
        wall, r1 = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
        row.update(finetune_steps=steps, finetune_s=round(wall, 3),
                   finetune_page_faults_per_step=round((r1.ru_minflt - r0.ru_minflt) / steps, 1))
    emit("allocator_run", config(**row))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--finetune-steps", type=int, default=20)
    ap.add_argument("--source", default=str(FACES / "photos" / "fr_obama.jpg"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.source, args.finetune_steps)
        return

    from _jsonl import config, emit

    runs: dict[str, list[dict]] = {"tuned": [], "default": []}
    for _ in range(args.rounds):
        for mode in ("default", "tuned"):
            env = dict(os.environ)
            env.pop("HEADPUPPET_MALLOC", None)
            if mode == "default":
                env["HEADPUPPET_MALLOC"] = "default"
            out = subprocess.run([sys.executable, __file__, "--child", "--source", args.source,
                                  "--finetune-steps", str(args.finetune_steps)],
                                 env=env, capture_output=True, text=True, check=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
            print(line, flush=True)
            runs[mode].append(json.loads(line))
    for key in ("g_ms_per_frame", "g_sys_ms_per_frame", "finetune_s"):
        pairs = [(t[key], d[key]) for t, d in zip(runs["tuned"], runs["default"]) if key in t and key in d]
        if not pairs:
            continue
        ratios = [t / d for t, d in pairs if d]
        emit("allocator_ratio", config(measure=key, rounds=len(pairs),
                                       tuned_over_default_median=round(statistics.median(ratios), 3) if ratios else None,
                                       ratios=[round(r, 3) for r in ratios],
                                       tuned=[t for t, _ in pairs], default=[d for _, d in pairs]))


if __name__ == "__main__":
    main()
