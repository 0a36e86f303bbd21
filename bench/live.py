"""Benchmark of live driving (``headpuppet live``): can the default model keep up with a 25 fps stream?

A shared face video is played into ``headpuppet live`` at its own speed (``--realtime``: ffmpeg's
``-re``, so frames arrive as from a camera and late ones are dropped), once per thread setting.

Prints one JSON object per line, ``live``, one per thread setting, with ``machine``, ``cpus``,
``load`` (after the run; ``load_before`` too), ``threads`` (OpenMP/torch threads of the run, or
"default"), ``photo``, ``video``, ``seconds``, ``checkpoint``, ``extra``, then the figures of
``headpuppet live --stats``: ``fps_in`` (the stream's), ``fps_out`` (frames made per second),
``fps_out_over_in``, ``decoded``, ``processed``, ``dropped``, ``no_face``, the mean per-frame times
``detect_ms_mean``, ``render_ms_mean``, ``write_ms_mean``, the latency from a frame being decoded
to its output frame being written (``latency_ms_median``, ``latency_ms_p90``, ``latency_ms_max``),
and CPU time per frame (``render_cpu_ms_mean``: the rendering thread; ``cpu_ms_per_frame``: the
whole process).

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
    from _jsonl import config, emit

    for t in args.threads.split(","):
        threads = None if t == "all" else int(t)
        load_before = round(os.getloadavg()[0], 2)
        s = run(Path(args.photo), Path(args.video), threads, args.seconds, args.checkpoint, args.extra.split() if args.extra else [])
        lat, det, ren = s["latency_ms"], s["detect_ms"], s["render_ms"]
        emit("live", config(
            threads=threads if threads else "default", photo=Path(args.photo).name, video=Path(args.video).name,
            seconds=args.seconds, checkpoint=args.checkpoint or "default model", extra=args.extra or None,
            load_before=load_before, fps_in=s["fps_in"], fps_out=round(s["fps_out"], 2),
            fps_out_over_in=round(s["fps_out"] / s["fps_in"], 3) if s["fps_in"] else None,
            decoded=s["decoded"], processed=s["processed"], dropped=s["dropped"], no_face=s["no_face"],
            detect_ms_mean=_r(det["mean"]), render_ms_mean=_r(ren["mean"]), write_ms_mean=_r(s["write_ms"]["mean"]),
            latency_ms_median=_r(lat["median"]), latency_ms_p90=_r(lat["p90"]), latency_ms_max=_r(lat["max"]),
            render_cpu_ms_mean=_r(s["render_cpu_ms"]["mean"]), cpu_ms_per_frame=_r(s["cpu_ms_per_frame"])))


def _r(v, nd: int = 1):
    return None if v is None else round(v, nd)


if __name__ == "__main__":
    main()
