"""Speed of the CSIM (dlib) metric: generated frames scored per second.

    python bench/csim_dlib.py                          # CPU, batches of 8 frames at 256 px
    python bench/csim_dlib.py --device cuda --batch 32 --size 512
    python bench/csim_dlib.py --threads 1              # on a machine busy with other work
    python bench/csim_dlib.py --batch 2 --batches 1 --size 128    # a quick check

Frames and landmarks are real (a shared video, mediapipe landmarks); the "generated" frames are the
next frames of the same video.

Prints one JSON object per line, each with ``machine``, ``cpus``, ``threads``, ``load``, ``video``,
``device``, ``size``, ``batch``:

- ``csim_dlib``, ``targets``: ``new_targets`` (each batch embeds 8 generated and 8 real chips, as
  the first table cell does) and ``cached_targets`` (real descriptors reused, as every later cell
  does): ``frames_per_s`` and ``ms_per_batch``, medians over ``batches`` after one warm-up batch;
- ``csim_dlib_alignment``: how much of it is dlib's alignment (numpy), ``ms_per_frame``;
- ``csim_dlib_next_frame_pairs``: ``mean_csim`` of the next-frame pairs scored (a sanity check).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "videos" / "lp_d14.mp4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (on a machine busy with other work, 1 avoids thread contention)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from headpuppet.evaluation import MetricBatch
    from headpuppet_plugins.metrics import DlibCSIMMetric
    from headpuppet.nets.dlib_resnet import extract_chips, load_dlib_resnet
    from headpuppet.plugins import make_plugin_manager, registry
    from headpuppet.media.video import read_frames

    n = args.batch * args.batches + 1
    frames = [cv2.resize(f, (args.size, args.size), interpolation=cv2.INTER_AREA)
              for f in read_frames(args.video, max_frames=n)]
    det = registry(make_plugin_manager(), "landmarks").create("mediapipe")
    points = np.stack([det.detect(f)[0].points for f in frames])
    frames = np.stack(frames)
    metric = DlibCSIMMetric(load_dlib_resnet(device=args.device), device=args.device, batch_size=args.batch)

    def batches(offset):
        for b in range(args.batches):
            i = np.arange(b * args.batch, (b + 1) * args.batch)
            yield MetricBatch(fake=frames[i + 1], real=frames[i], real_points=points[i], source=frames[i],
                              source_points=points[i], real_keys=[(offset, int(k)) for k in i],
                              source_keys=[(offset, int(k)) for k in i])

    from _jsonl import config, emit

    conf = dict(video=args.video.name, device=args.device, size=args.size, batch=args.batch)
    metric.update(next(batches(-1)))  # warm-up
    for label in ("new_targets", "cached_targets"):
        t = []
        for batch in batches(0):
            t0 = time.perf_counter()
            metric.update(batch)
            t.append(time.perf_counter() - t0)
        med = statistics.median(t)
        emit("csim_dlib", config(**conf, targets=label, batches=len(t), frames_per_s=round(args.batch / med, 2),
                                 ms_per_batch=round(med * 1000, 1)))
    t0 = time.perf_counter()
    for _ in range(3):
        extract_chips(frames[:args.batch], points[:args.batch])
    align = (time.perf_counter() - t0) / 3
    emit("csim_dlib_alignment", config(**conf, what="dlib alignment (numpy, uint8 as dlib)",
                                       ms_per_frame=round(align * 1000 / args.batch, 2)))
    emit("csim_dlib_next_frame_pairs", config(**conf, mean_csim=round(float(metric.compute().value), 4)))


if __name__ == "__main__":
    main()
