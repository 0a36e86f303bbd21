"""Benchmark of live driving (``headpuppet live``): can the default model keep up with a 25 fps stream?

A shared face video is played into ``headpuppet live`` at its own speed (``--realtime``: ffmpeg's
``-re``, so frames arrive as from a camera and late ones are dropped), once per setting; the script
prints frames made per second, frames dropped, per-stage times and the latency from a frame being
decoded to its output frame being written, with the load average beside them.

    python bench/live.py                                   # default model, 1 and all threads
    python bench/live.py --threads 1 --seconds 20 --checkpoint runs/00003/checkpoints/step-0001000

The figures depend on the load: on a shared machine run it when nothing else is, or say what was.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("HEADPUPPET_FACES", ROOT.parent / "shared" / "data" / "faces"))


def run(photo: Path, video: Path, threads: int | None, seconds: float, checkpoint: str | None,
        extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "stats.json"
        cmd = [sys.executable, "-m", "headpuppet", "live", str(photo), str(video), "--realtime",
               "-o", str(Path(tmp) / "out.mp4"), "--duration", str(seconds), "--stats", str(stats), *extra]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        else:
            env.pop("OMP_NUM_THREADS", None)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0:
            raise SystemExit(res.stderr[-2000:])
        return json.loads(stats.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", default=str(FACES / "photos" / "fr_obama.jpg"))
    ap.add_argument("--video", default=str(FACES / "videos" / "dpe_d.mp4"), help="a 25 fps face video (10 s)")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", default="1,all", help="torch/OpenMP threads to try (comma list; 'all' = default)")
    ap.add_argument("--checkpoint", default=None, help="default: the default model")
    ap.add_argument("--extra", default="", help="more options for headpuppet live, e.g. '--side-by-side'")
    args = ap.parse_args()
    print(f"cpu cores {os.cpu_count()}; load average before: {os.getloadavg()[0]:.2f}")
    for t in args.threads.split(","):
        threads = None if t == "all" else int(t)
        s = run(Path(args.photo), Path(args.video), threads, args.seconds, args.checkpoint, args.extra.split() if args.extra else [])
        lat, det, ren = s["latency_ms"], s["detect_ms"], s["render_ms"]
        print(f"threads {t}: {s['fps_out']:.1f} frames/s made of a {s['fps_in']:g} fps stream "
              f"({s['processed']} made, {s['dropped']} dropped of {s['decoded']}); "
              f"detect {det['mean']:.1f} ms, render {ren['mean']:.1f} ms, write {s['write_ms']['mean']:.1f} ms per frame; "
              f"latency median {lat['median']:.0f} ms, 90% {lat['p90']:.0f} ms; "
              f"CPU time per frame: render {s['render_cpu_ms']['mean']:.1f} ms, process {s['cpu_ms_per_frame']:.1f} ms; "
              f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
