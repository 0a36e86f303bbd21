"""Benchmark ``headpuppet preprocess`` end to end: decode, detect, crop, write, against real time.

The preprocessing of Zakharov et al. 2019 (Sec. 4: VoxCeleb2 face crops + landmarks) is run, through
``headpuppet.data.preprocess.preprocess`` (what the command calls), on a clip of ``--seconds`` at
``--clip-size`` px (default: 10 s at 512 px, made once with the bundled ffmpeg from a shared
talking-head video, looped and scaled as needed), once per worker count, into a fresh dataset each
time. Figures are wall-clock for the whole call, so they include process start-up of the worker
pool and the detector's model loading (an untimed one-frame run first pays this process's imports,
so that the worker count measured first is not charged for them). The goal (the performance
issue): at least 4x real time end to end on 2 cores for a 10 s 512 px clip, and faster with
``--workers 2`` than 1. (``preprocess`` spreads videos over its workers; a single video, as with
``--copies 1``, runs in the calling process whatever ``--workers`` says, so ``workers2_speedup``
stays near 1 until a video's frames are split between workers.)

    python bench/preprocess.py                       # lp_d14.mp4 -> a 10 s 512 px clip; workers 1 and 2
    python bench/preprocess.py --video /path/v.mp4 --copies 4 --workers 1 2 4 --size 256
    python bench/preprocess.py --seconds 1 --clip-size 128 --size 64      # a quick check

Prints one JSON object per line (notes go to stderr), each with ``machine``, ``cpus``, ``load`` and
the configuration (``video``, ``clip_s``, ``clip_px``, ``clip_frames``, ``copies``, ``input_s``
= copies x clip_s, ``size``, ``every``, ``max_frames``, ``detector``, ``repeat``):

- ``preprocess``, per worker count: ``workers``, ``wall_s`` (the best of ``--repeat`` runs),
  ``frames`` (decoded) and ``frames_kept`` (with a face), ``frames_per_s`` end to end,
  ``frames_per_s_per_process`` (summed per-video times: start-up excluded), ``x_realtime`` =
  input_s / wall_s (``goal_x_realtime``: 4), ``speedup_vs_workers1`` = wall(1) / wall(this);
- ``preprocess_workers``, when 1 and 2 workers were both run: ``wall_s_workers1``,
  ``wall_s_workers2``, ``workers2_speedup`` = wall(1) / wall(2) (the goal: above 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "faces" / "videos" / "lp_d14.mp4"


def make_clip(src: Path, seconds: float, px: int, out: Path) -> Path:
    """``src`` looped to ``seconds`` and scaled (then centre-cropped) to ``px`` x ``px``, H.264, no audio."""
    from headpuppet.media.video import ffmpeg_exe

    vf = f"scale={px}:{px}:force_original_aspect_ratio=increase,crop={px}:{px}"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-stream_loop", "-1", "-i", str(src),
                    "-t", str(seconds), "-vf", vf, "-an", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p",
                    str(out)], check=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=Path(os.environ.get("HEADPUPPET_BENCH_VIDEO", DEFAULT_VIDEO)),
                    help="the source of the clip")
    ap.add_argument("--seconds", type=float, default=10.0, help="the clip's duration (the source is looped)")
    ap.add_argument("--clip-size", type=int, default=512, help="the clip's side in pixels")
    ap.add_argument("--copies", type=int, default=1, help="how many copies of the clip form the input")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--size", type=int, default=256, help="crop side of the dataset")
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--detector", default="mediapipe")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (the best is reported)")
    args = ap.parse_args()

    from _jsonl import config, emit, note

    from headpuppet.data.preprocess import preprocess
    from headpuppet.media.video import probe
    from headpuppet.plugins import make_plugin_manager

    if not args.video.exists():
        sys.exit(f"video not found: {args.video} (give --video)")
    pm = make_plugin_manager()
    walls: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="hp-bench-") as tmp:
        tmp = Path(tmp)
        clip = make_clip(args.video, args.seconds, args.clip_size, tmp / f"clip_{args.seconds:g}s_{args.clip_size}.mp4")
        info = probe(clip)
        inp = tmp / "in"
        inp.mkdir()
        for k in range(args.copies):
            shutil.copyfile(clip, inp / f"copy{k}{clip.suffix}")
        cfg = dict(video=args.video.name, clip_s=round(info.duration, 2), clip_px=info.width,
                   clip_frames=info.num_frames, copies=args.copies, input_s=round(args.copies * info.duration, 2),
                   size=args.size, every=args.every, max_frames=args.max_frames, detector=args.detector,
                   repeat=args.repeat)
        note(f"# clip {info.width}x{info.height}, {info.num_frames} frames, {info.fps:g} fps, "
             f"{info.duration:.2f} s (from {args.video}); {args.copies} copies; size {args.size}")
        # untimed: the first call in a process pays the imports and the detector's first load, which
        # would count against whichever worker count runs first
        preprocess([inp], tmp / "warm-up", size=args.size, max_frames=1, detector=args.detector, pm=pm)
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
            walls[workers] = dt
            emit("preprocess", config(
                **cfg, workers=workers, wall_s=round(dt, 3), frames=frames, frames_kept=kept,
                frames_per_s=round(frames / dt, 2),
                frames_per_s_per_process=round(frames / sum(per_video), 2) if per_video else None,
                x_realtime=round(cfg["input_s"] / dt, 2), goal_x_realtime=4.0,
                speedup_vs_workers1=round(walls[1] / dt, 2) if 1 in walls else None))
    if 1 in walls and 2 in walls:
        emit("preprocess_workers", config(**cfg, wall_s_workers1=round(walls[1], 3),
                                          wall_s_workers2=round(walls[2], 3),
                                          workers2_speedup=round(walls[1] / walls[2], 2), goal_workers2_speedup=1.0))


if __name__ == "__main__":
    main()
