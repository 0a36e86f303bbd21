"""Benchmark of the evaluation metrics: frames per second of each metric on CPU.

    python bench/evaluate.py                       # 256 px, 16 frames, batch 8, 1 thread
    python bench/evaluate.py --size 256 --frames 32 --threads 2 --repeats 3

Frames are real face crops (scikit-image's astronaut, shifted and noised so pairs differ). FID and
CSIM run their full networks (FID Inception-v3 at 299x299, ArcFace iresnet100 at 112x112) with
RANDOM weights: the cost of a forward pass does not depend on the weights, the values do, so only
the timings mean anything. FID's figure is the feature extraction per frame (generated + real of
each pair), its Frechet distance (a 2048x2048 matrix square root) is timed separately, once per
table cell. The landmark error includes the MediaPipe detector (when available) on each frame.
The warp baselines are timed too (frames/s of rendering).

The machine is shared: figures depend on its load, which is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
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

    real, fake, pts = frames(args.size, args.frames)
    n = args.frames
    print(f"headpuppet bench/evaluate: {n} frames of {args.size}x{args.size}, batch {args.batch}, "
          f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (shared machine)")

    def batches():
        for i in range(0, n, args.batch):
            s = slice(i, i + args.batch)
            yield MetricBatch(fake=fake[s], real=real[s], real_points=pts[s], source=real[s], source_points=pts[s],
                              real_keys=None, source_keys=None)

    metrics = {"ssim": SSIMMetric(), "psnr": PSNRMetric()}
    torch.manual_seed(0)
    metrics["fid (features, random weights)"] = FIDMetric(build_fid_inception(None), batch_size=args.batch)
    metrics["csim (iresnet100, random weights)"] = CSIMMetric(build_arcface(None, "r100"), batch_size=args.batch)
    try:
        from headpuppet.plugins import make_plugin_manager, registry

        det = registry(make_plugin_manager(), "landmarks").create("mediapipe")
        metrics["landmark-error (mediapipe)"] = LandmarkErrorMetric(det)
    except Exception as exc:  # report, do not fail the benchmark
        print(f"landmark-error: skipped ({type(exc).__name__}: {exc})")

    print(f"{'metric':38s} {'frames/s':>10s} {'ms/frame':>10s}")
    for name, m in metrics.items():
        def go(m=m):
            m.reset()
            for b in batches():
                m.update(b)
            if not isinstance(m, FIDMetric):  # FID: per-frame cost without the set statistic (below)
                m.compute()
        sec = timed(go, args.repeats)
        print(f"{name:38s} {n / sec:10.2f} {1000 * sec / n:10.1f}")

    rng = np.random.default_rng(0)
    f1, f2 = rng.normal(size=(64, 2048)), rng.normal(size=(64, 2048))
    sec = timed(lambda: frechet_distance(*feature_statistics(f1), *feature_statistics(f2)), 1)
    print(f"{'fid: Frechet distance of 2048-d sets':38s} {'':>10s} {1000 * sec:10.1f} ms once per table cell")

    shots = real[:4]
    for method in (CopyBaseline(), WarpBaseline("tps"), WarpBaseline("pwa")):
        state = method.prepare(shots, pts[:4])
        sec = timed(lambda: method.render(state, pts), args.repeats)
        print(f"{'baseline ' + method.name:38s} {n / sec:10.2f} {1000 * sec / n:10.1f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
