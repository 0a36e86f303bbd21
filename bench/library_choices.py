"""Where a well-kept library does a job headpuppet also does, measure both and print one JSON line each.

    python bench/library_choices.py                      # a shared video, 5 repeats
    python bench/library_choices.py --video clip.mp4 --repeats 3

1. **Video probing.** ``headpuppet.media.video.probe`` runs ffmpeg once: the input header gives size,
   fps, duration, audio and rotation, and stream-copying the video into the null muxer counts its
   packets without decoding. imageio-ffmpeg's own route needs two runs: ``count_frames_and_secs``
   (which decodes every frame) plus the ``read_frames`` header for size, fps and audio.
2. **The thin-plate spline of the ``warp`` baseline** (numpy): our own solve (its former code, kept
   here as the reference) against ``scipy.interpolate.RBFInterpolator(kernel="thin_plate_spline")``,
   which the baseline now uses, with the same smoothing, both evaluated on a 64x64 grid. Printed: time per warp-grid and the largest difference of the mapped
   source positions, in pixels. (The model's own spline, ``headpuppet.models.tps``, must stay in torch:
   it sits inside the autograd graph, batched, on CPU or CUDA.)

SSIM and PSNR are scikit-image's own (``plugins/metrics.py``); nothing to compare there.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from _jsonl import config  # bench/ is on the path (the script's folder)

VIDEO = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "videos" / "lp_d14.mp4"


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def probe_figures(video: Path, repeats: int) -> dict:
    import imageio_ffmpeg

    from headpuppet.media.video import probe

    def library():
        frames, secs = imageio_ffmpeg.count_frames_and_secs(str(video))
        gen = imageio_ffmpeg.read_frames(str(video))
        meta = next(gen)  # the header: size, fps, duration, audio codec
        gen.close()
        return frames, secs, meta

    ours = probe(video)
    frames, secs, meta = library()
    t_ours = _median_s(lambda: probe(video), repeats)
    t_lib = _median_s(library, repeats)
    return {"figure": "video_probe", **config(video=video.name, repeats=repeats),
            "ours_ms": round(t_ours * 1e3, 1), "imageio_ffmpeg_ms": round(t_lib * 1e3, 1),
            "library_over_ours": round(t_lib / t_ours, 2),
            "frames_ours": ours.num_frames, "frames_library": frames,
            "size_equal": tuple(meta["size"]) == (ours.width, ours.height),
            "fps_ours": ours.fps, "fps_library": meta["fps"]}


def tps_figures(repeats: int, size: int = 256) -> dict:
    from scipy.interpolate import RBFInterpolator

    from headpuppet.evaluation.baselines import _anchors

    def _tps_kernel(r2):  # U(r) = r^2 log r^2, with U(0) = 0
        with np.errstate(divide="ignore", invalid="ignore"):
            k = r2 * np.log(r2)
        return np.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0)

    rng = np.random.default_rng(0)
    # a face-sized cloud of 68 points moved by a few pixels, as a pose change does
    src = rng.uniform(0.25 * size, 0.75 * size, (68, 2))
    dst = src + rng.normal(0, 4, src.shape)
    anchors = _anchors(size)
    d = np.concatenate([dst, anchors]) / size
    s_pts = np.concatenate([src, anchors]) / size
    reg = 1e-3
    ys, xs = np.meshgrid(np.linspace(0, size - 1, 64), np.linspace(0, size - 1, 64), indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], 1) / size

    def ours():  # the solve baselines.tps_warp had before it took scipy's (up to the remap)
        n = len(d)
        K = _tps_kernel(((d[:, None] - d[None]) ** 2).sum(-1)) + reg * np.eye(n)
        P = np.concatenate([np.ones((n, 1)), d], 1)
        L = np.zeros((n + 3, n + 3))
        L[:n, :n], L[:n, n:], L[n:, :n] = K, P, P.T
        rhs = np.zeros((n + 3, 2))
        rhs[:n] = s_pts
        coef = np.linalg.lstsq(L, rhs, rcond=None)[0]
        U = _tps_kernel(((grid[:, None] - d[None]) ** 2).sum(-1))
        return (U @ coef[:n] + coef[n] + grid @ coef[n + 1:]) * size

    def library():
        # U = r^2 log r^2 = 2 r^2 log r: scipy's kernel is half of ours, so its smoothing is half too
        return RBFInterpolator(d, s_pts, kernel="thin_plate_spline", smoothing=reg / 2, degree=1)(grid) * size

    diff = float(np.abs(ours() - library()).max())
    t_ours = _median_s(ours, repeats)
    t_lib = _median_s(library, repeats)
    return {"figure": "tps_grid", **config(size=size, points=68 + 8, grid=64, repeats=repeats),
            "ours_ms": round(t_ours * 1e3, 2), "scipy_ms": round(t_lib * 1e3, 2),
            "scipy_over_ours": round(t_lib / t_ours, 2), "max_diff_px": diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=VIDEO)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not args.video.is_file():
        raise SystemExit(f"{args.video}: no such video (give --video)")
    print(json.dumps(probe_figures(args.video, args.repeats)), flush=True)
    print(json.dumps(tps_figures(args.repeats * 4)), flush=True)


if __name__ == "__main__":
    main()
