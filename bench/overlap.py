"""Does `animate` gain from running the driver's landmark pass beside the photo's fine-tuning?

    python bench/overlap.py                        # 60 s 512 px driver, the default model, 2 rounds
    python bench/overlap.py --seconds 20 --rounds 3

`headpuppet animate PHOTO DRIVER` fine-tunes the model on the photo (paper section 3.4, the model's
``finetune.steps``) and then finds the driver's landmarks (pass 1), one after the other. Neither needs
the other's result, so they could run at once: this script measures whether that pays on this
machine. Each round times, in one process (the model loaded and the photo embedded once, before):

- ``sequential``: fine-tuning (torch's default threads), then the landmark pass (as many detectors
  on threads as ``animate`` uses);
- ``concurrent``: the landmark pass on a thread beside the fine-tuning, with
  ``torch_threads`` for torch and ``detectors`` detectors, for each split given by ``--splits``.

Each is one JSON line (machine, threads, load average) with ``finetune_s``, ``landmarks_s`` and
``wall_s``; ``concurrent`` lines also give ``speedup`` = the sequential wall of the same round / its
own. The driver is a shared face video looped to ``--seconds`` and scaled to ``--size`` px (made once,
in a temporary folder), as in ``bench/animate_e2e.py``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import torch

from _jsonl import config  # bench/ is on the path (the script's folder)
from animate_e2e import add_driver_args, check_inputs, make_driver

def landmark_pass(animator, driver, detectors: int) -> float:
    """Seconds of pass 1 (:func:`headpuppet.fewshot.pipeline.track_driver`) with ``detectors`` detectors."""
    from headpuppet.fewshot.pipeline import track_driver
    from headpuppet.media.detection import close_detector

    dets = [animator.make_detector() for _ in range(detectors)]
    t = time.perf_counter()
    try:
        track_driver(driver, dets, animator.size)
    finally:
        for d in dets:
            close_detector(d)
    return time.perf_counter() - t


def finetune(animator, person, steps: int) -> float:
    t = time.perf_counter()
    animator.fine_tune(person, steps)
    return time.perf_counter() - t


def concurrent(animator, person, driver, steps: int, torch_threads: int, detectors: int) -> dict:
    default = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    out: dict = {}

    def run() -> None:
        out["landmarks_s"] = landmark_pass(animator, driver, detectors)

    thread = threading.Thread(target=run)
    t = time.perf_counter()
    thread.start()
    try:
        out["finetune_s"] = finetune(animator, person, steps)
    finally:
        thread.join()
        torch.set_num_threads(default)
    out["wall_s"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_driver_args(ap)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--splits", nargs="+", default=["2:2", "2:1", "1:1"],
                    help="torch_threads:detectors for the concurrent runs")
    args = ap.parse_args()
    check_inputs(args)
    import headpuppet
    from headpuppet.fewshot.sources import open_driver
    from headpuppet.media.detection import detection_threads
    from headpuppet.media.imaging import read_image

    animator = headpuppet.load_model()
    steps = animator.default_finetune_steps
    person = animator.prepare_source([read_image(args.photo)])
    splits = [tuple(int(n) for n in s.split(":")) for s in args.splits]
    with tempfile.TemporaryDirectory() as tmp:
        driver = open_driver(make_driver(args.video, args.seconds, args.size, Path(tmp)))
        animator.fine_tune(person, 2)  # warm-up: allocations, kernels
        base = dict(driver_frames=driver.num_frames, driver_px=driver.width, finetune_steps=steps)
        for r in range(args.rounds):
            ft = finetune(animator, person, steps)
            lm = landmark_pass(animator, driver, detection_threads())
            seq = ft + lm
            print(json.dumps({"figure": "sequential", **config(**base, round=r, torch_threads=torch.get_num_threads(),
                                                               detectors=detection_threads()),
                              "finetune_s": round(ft, 2), "landmarks_s": round(lm, 2), "wall_s": round(seq, 2)}),
                  flush=True)
            for threads, detectors in splits:
                row = concurrent(animator, person, driver, steps, threads, detectors)
                print(json.dumps({"figure": "concurrent", **config(**base, round=r, torch_threads=threads,
                                                                   detectors=detectors),
                                  **{k: round(v, 2) for k, v in row.items()},
                                  "speedup": round(seq / row["wall_s"], 3)}), flush=True)


if __name__ == "__main__":
    main()
