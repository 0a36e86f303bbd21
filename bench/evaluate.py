"""Benchmark of the evaluation metrics: frames per second of each metric on CPU.

    python bench/evaluate.py                       # 256 px, 16 frames, batch 8, 1 thread
    python bench/evaluate.py --size 256 --frames 32 --threads 2 --repeats 3
    python bench/evaluate.py --size 64 --frames 2 --batch 2 --repeats 1    # a quick check

Frames are real face crops (scikit-image's astronaut, shifted and noised so pairs differ). FID and
CSIM run their full networks (FID Inception-v3 at 299x299, ArcFace iresnet100 at 112x112) with
RANDOM weights: the cost of a forward pass does not depend on the weights, the values do, so only
the timings mean anything. FID's figure is the feature extraction per frame (generated + real of
each pair), its Frechet distance (a 2048x2048 matrix square root) is timed separately, once per
table cell. The landmark error includes the MediaPipe detector (when available) on each frame.
The warp baselines are timed too (frames/s of rendering).

Prints one JSON object per line, each with ``machine``, ``cpus``, ``threads``, ``load`` (the
machine is shared: figures depend on it), ``size``, ``frames``, ``batch``, ``repeats`` (the best
run is kept), ``torch``:

- ``evaluate_metric``, per ``metric`` (ssim, psnr, fid, csim, landmark-error; ``note`` says what
  is included): ``frames_per_s`` and ``ms_per_frame``; ``error`` instead when it cannot run here;
- ``evaluate_fid_frechet``: ``ms`` of FID's Frechet distance, once per table cell;
- ``evaluate_baseline``, per ``baseline`` (copy, warp, warp-pwa): ``frames_per_s`` and
  ``ms_per_frame`` of rendering.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def frames(size: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(real, fake, points)``: ``n`` real face crops, perturbed copies, and landmark-like points."""
    import cv2
    from skimage import data

    img = data.astronaut()
    rng = np.random.default_rng(0)
    real, fake = [], []
    for i in range(n):
        dx, dy = rng.integers(0, 24, 2)
        crop = cv2.resize(img[10 + dy:230 + dy, 130 + dx:350 + dx], (size, size), interpolation=cv2.INTER_AREA)
        real.append(crop)
        fake.append(np.clip(crop.astype(int) + rng.integers(-20, 21, crop.shape), 0, 255).astype(np.uint8))
    pts = np.tile(np.array([size / 2, size / 2], np.float32), (n, 68, 1))
    pts[:, 36:42] = (0.38 * size, 0.45 * size)
    pts[:, 42:48] = (0.62 * size, 0.45 * size)
    pts[:, 30] = (0.5 * size, 0.58 * size)
    pts[:, 48], pts[:, 54] = (0.4 * size, 0.72 * size), (0.6 * size, 0.72 * size)
    return np.stack(real), np.stack(fake), pts


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from headpuppet.evaluation import CopyBaseline, MetricBatch, WarpBaseline
    from headpuppet_plugins.metrics import (CSIMMetric, FIDMetric, LandmarkErrorMetric, PSNRMetric, SSIMMetric,
                                            feature_statistics, frechet_distance)
    from headpuppet.nets.facerec import build_arcface
    from headpuppet.nets.inception import build_fid_inception

    from _jsonl import config, emit, note

    real, fake, pts = frames(args.size, args.frames)
    n = args.frames
    conf = dict(size=args.size, frames=n, batch=args.batch, repeats=args.repeats, torch=torch.__version__)

    def batches():
        for i in range(0, n, args.batch):
            s = slice(i, i + args.batch)
            yield MetricBatch(fake=fake[s], real=real[s], real_points=pts[s], source=real[s], source_points=pts[s],
                              real_keys=None, source_keys=None)

    # name -> (metric, weights / what the timing covers)
    metrics = {"ssim": (SSIMMetric(), None), "psnr": (PSNRMetric(), None)}
    torch.manual_seed(0)
    metrics["fid"] = (FIDMetric(build_fid_inception(None), batch_size=args.batch),
                      "Inception-v3 features of generated + real, RANDOM weights (timing only)")
    metrics["csim"] = (CSIMMetric(build_arcface(None, "r100"), batch_size=args.batch),
                       "ArcFace iresnet100, RANDOM weights (timing only)")
    try:
        from headpuppet.plugins import make_plugin_manager, registry

        det = registry(make_plugin_manager(), "landmarks").create("mediapipe")
        metrics["landmark-error"] = (LandmarkErrorMetric(det), "mediapipe detector included")
    except Exception as exc:  # report, do not fail the benchmark
        note(f"landmark-error: skipped ({type(exc).__name__}: {exc})")
        emit("evaluate_metric", config(**conf, metric="landmark-error", error=f"{type(exc).__name__}: {exc}"))

    for name, (m, what) in metrics.items():
        def go(m=m):
            m.reset()
            for b in batches():
                m.update(b)
            if not isinstance(m, FIDMetric):  # FID: per-frame cost without the set statistic (below)
                m.compute()
        sec = timed(go, args.repeats)
        emit("evaluate_metric", config(**conf, metric=name, note=what, frames_per_s=round(n / sec, 2),
                                       ms_per_frame=round(1000 * sec / n, 2)))

    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(64, 2048)), rng.normal(size=(64, 2048))
    sec = timed(lambda: frechet_distance(*feature_statistics(f1), *feature_statistics(f2)), 1)
    emit("evaluate_fid_frechet", config(**conf, what="Frechet distance of two 2048-d sets, once per table cell",
                                        ms=round(1000 * sec, 1)))

    shots = real[:4]
    for method in (CopyBaseline(), WarpBaseline("tps"), WarpBaseline("pwa")):
        state = method.prepare(shots, pts[:4])
        sec = timed(lambda: method.render(state, pts), args.repeats)
        emit("evaluate_baseline", config(**conf, baseline=method.name, shots=len(shots),
                                         frames_per_s=round(n / sec, 2), ms_per_frame=round(1000 * sec / n, 2)))


if __name__ == "__main__":
    main()
