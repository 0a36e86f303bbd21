"""Benchmark ``headpuppet preprocess`` end to end: decode, detect, crop, write (frames per second).

The preprocessing of Zakharov et al. 2019 (Sec. 4: VoxCeleb2 face crops + landmarks) is run on
copies of one shared talking-head video, once per worker count, into a fresh dataset each time.
Figures are wall-clock for the whole call, so they include process start-up of the worker pool
and the detector's model loading; on a shared machine they depend on the load of the moment.

    python bench/preprocess.py                       # lp_d14.mp4 (10 s, 300 frames, 512x512), x2
    python bench/preprocess.py --video /path/v.mp4 --copies 4 --workers 1 2 4 --size 256
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "faces" / "videos" / "lp_d14.mp4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=Path(os.environ.get("HEADPUPPET_BENCH_VIDEO", DEFAULT_VIDEO)))
    ap.add_argument("--copies", type=int, default=2, help="how many copies of the video form the input")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--detector", default="mediapipe")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (the best is reported)")
    args = ap.parse_args()

    from headpuppet.plugins import make_plugin_manager
    from headpuppet.data.preprocess import preprocess
    from headpuppet.media.video import probe

    if not args.video.exists():
        sys.exit(f"video not found: {args.video} (give --video)")
    info = probe(args.video)
    print(f"video     {args.video} ({info.width}x{info.height}, {info.num_frames} frames, {info.fps:g} fps, "
          f"{info.duration:.2f} s)")
    print(f"input     {args.copies} copies; size {args.size}; every {args.every}; max-frames {args.max_frames}; "
          f"detector {args.detector}")
    print(f"machine   {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    pm = make_plugin_manager()
    with tempfile.TemporaryDirectory(prefix="hp-bench-") as tmp:
        tmp = Path(tmp)
        inp = tmp / "in"
        inp.mkdir()
        for k in range(args.copies):
            shutil.copyfile(args.video, inp / f"copy{k}{args.video.suffix}")
        for workers in args.workers:
            best = None
            for r in range(args.repeat):
                out = tmp / f"out-{workers}-{r}"
                t0 = time.perf_counter()
                s = preprocess([inp], out, size=args.size, every=args.every, max_frames=args.max_frames,
                               detector=args.detector, workers=workers, pm=pm)
                dt = time.perf_counter() - t0
                if s.failed:
                    sys.exit(f"failed: {[(f.source, f.reason) for f in s.failed]}")
                frames = s.frames_kept + s.frames_no_face
                per_video = [r_.seconds for r_ in s.done]
                if best is None or dt < best[0]:
                    best = (dt, frames, s.frames_kept, per_video)
                shutil.rmtree(out)
            dt, frames, kept, per_video = best
            per_proc = frames / sum(per_video) if per_video else float("nan")
            print(f"workers {workers}: {frames} frames ({kept} with a face) in {dt:.2f} s -> "
                  f"{frames / dt:.1f} frames/s end to end (one process, start-up excluded: {per_proc:.1f} "
                  f"frames/s; load average now {os.getloadavg()[0]:.2f})")

if __name__ == "__main__":
    main()
