"""`headpuppet animate` end to end against its parts, start-up, and peak memory on a long driver.

    python bench/animate_e2e.py                       # 60 s driver at 512 px, the default model
    python bench/animate_e2e.py --seconds 10 --size 256

Prints JSON lines, each with the machine, thread count and load average:

- ``startup``: ``headpuppet --help`` (the CLI's start-up) and, in a fresh process, ``import headpuppet``
  plus ``headpuppet.load_model()`` (the default model ready to render), medians of ``--repeats``,
  next to ``import torch`` alone (the floor under the latter);
- ``end_to_end``, ``--rounds`` times each: with animate's default fine-tuning on the photo
  (``finetune_steps`` "default") and without (0); the command ``headpuppet -v animate PHOTO DRIVER -o
  OUT`` in a fresh process, its wall time from start-up to the written video (with the driver's
  audio) and the process's exit, split by the timings line that ``-v`` prints into ``person_s``
  (model load, the photo's landmarks, embedding and fine-tuning), ``landmarks_s`` (the driver's: what
  the command waited for them; ``landmarks_helper_s``: the helper process's whole pass, which starts
  with the command, :mod:`headpuppet.fewshot.drivertrack`),
  ``render_s`` (G) and ``rest_s`` (start-up, encoding, exit; ``finish_s``: of it, the encoder's last
  kept frames, the audio and the file),
  its peak resident memory (the largest process, ffmpeg children included), and the reference
  ``G alone + a plain decode and encode``: G's time for the same number of frames (the animator's
  default precision, batch 8, measured in this process) plus one ffmpeg run that decodes the driver
  and encodes a video of the output's size. ``ratio`` = wall / reference; the goal is <= 1.5.
  The landmark pass (face detection on every driver frame) is part of the wall time and not of the
  reference, so it is printed on its own (``landmarks_s``), with G's share in the run (``render_s``).
  G alone is timed just before and just after each run, and the reference takes the mean of the two
  (``g_alone_before_after_s``: this machine's speed drifts between minutes);
- ``end_to_end_summary`` per mode: ``ratio_median``, ``ratio_min``, ``ratio_max`` over the rounds.

The driver is a shared face video with sound (a creator's driver has it) looped to ``--seconds`` and
scaled to ``--size`` px (made once, in a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch  # loaded here so every line reports its thread count

from _jsonl import config  # bench/ is on the path (the script's folder)

ROOT = Path(__file__).resolve().parents[1]
FACES = Path(os.environ.get("HEADPUPPET_FACES", ROOT.parent / "shared" / "data" / "faces"))


# child processes as a user's: Python may keep compiled .pyc files (some sandboxes set
# PYTHONDONTWRITEBYTECODE, which makes every start-up compile headpuppet's sources anew)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _wall(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    return time.perf_counter() - t


def _timed(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=ENV).stdout
    return float(out.strip().splitlines()[-1])


def startup(repeats: int) -> dict:
    exe = [sys.executable, "-m", "headpuppet"]
    _wall(exe + ["--help"])  # untimed: writes the .pyc files a second run finds
    help_s = statistics.median(_wall(exe + ["--help"]) for _ in range(repeats))
    load = "import time; t = time.perf_counter(); import headpuppet; headpuppet.load_model(); print(time.perf_counter() - t)"
    torch_only = "import time; t = time.perf_counter(); import torch; print(time.perf_counter() - t)"
    loads = [_timed(load) for _ in range(repeats)]
    torch_s = [_timed(torch_only) for _ in range(repeats)]
    return {"figure": "startup", **config(repeats=repeats), "cli_help_s": round(help_s, 3),
            "import_and_load_model_s": round(statistics.median(loads), 3),
            "import_torch_alone_s": round(statistics.median(torch_s), 3), "goal_s": 2.0}


def make_driver(src: Path, seconds: float, size: int, folder: Path) -> Path:
    from headpuppet.media.video import ffmpeg_exe

    out = folder / f"driver_{int(seconds)}s_{size}.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(src), "-t", str(seconds),
                    "-vf", f"scale={size}:{size}", "-c:v", "libx264", "-crf", "20", "-c:a", "aac", str(out)],
                   check=True)
    return out


def generator_seconds(frames: int, photo: Path, batch: int = 8) -> tuple[float, str]:
    """G alone for ``frames`` frames (all of them, in batches of ``batch``: a few batches alone vary by
    1.5x here), at the animator's default (auto) precision, after one warm-up batch."""
    import headpuppet
    from headpuppet.media.imaging import read_image

    model = headpuppet.load_model()
    person = model.prepare_source([read_image(photo)])
    pts = np.repeat(person.points[:1], batch, 0) + np.linspace(-1, 1, batch, dtype=np.float32)[:, None, None]
    model.render(person, pts, batch_size=batch)  # warm-up
    t = time.perf_counter()
    with torch.inference_mode():
        for _ in range(0, frames, batch):
            model.render(person, pts, batch_size=batch)
    return (time.perf_counter() - t) * frames / (batch * -(-frames // batch)), str(model.precision)


def end_to_end(photo: Path, driver: Path, folder: Path, finetune_steps: int | None, g_before: float,
               precision: str) -> dict:
    """One run of the command, set against G alone timed just before it (``g_before``, seconds) and
    again just after it: the reference takes their mean, since the machine's speed drifts between minutes."""
    from headpuppet.media.video import ffmpeg_exe, probe

    info = probe(driver)
    out = folder / "out.mp4"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    cmd = [sys.executable, "-m", "headpuppet", "-v", "animate", str(photo), str(driver), "-o", str(out)]
    steps = "default" if finetune_steps is None else str(finetune_steps)
    if finetune_steps is not None:
        cmd += ["--finetune-steps", steps]
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    wall = time.perf_counter() - t
    if res.returncode:
        raise SystemExit(f"animate failed: {res.stderr.strip().splitlines()[-1:]}")
    line = re.search(r"timings \(s\): (.*)", res.stdout)
    if line is None:
        raise SystemExit(f"animate printed no timings line: {res.stdout.strip().splitlines()[-1:]}")
    timings = {k: float(v) for k, v in (item.split("=") for item in line.group(1).split())}
    rss_mb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    size = probe(out).width
    plain = _wall([ffmpeg_exe(), "-v", "error", "-y", "-i", str(driver), "-vf", f"scale={size}:{size}",
                   "-c:v", "libx264", "-crf", "18", "-c:a", "copy", str(folder / "plain.mp4")])
    g_after = generator_seconds(info.num_frames, photo)[0]
    g_s = (g_before + g_after) / 2
    reference = g_s + plain
    parts = {k: round(timings.get(k, float("nan")), 2) for k in ("person", "landmarks", "render")}
    return {"figure": "end_to_end", **config(driver_frames=info.num_frames, driver_px=info.width,
                                              driver_s=round(info.duration, 1), output_px=size, precision=precision,
                                              finetune_steps=steps),
            "wall_s": round(wall, 2), "frames_per_s": round(info.num_frames / wall, 2),
            "g_alone_s": round(g_s, 2), "g_alone_before_after_s": [round(g_before, 2), round(g_after, 2)],
            "plain_decode_encode_s": round(plain, 2),
            "reference_s": round(reference, 2), "ratio": round(wall / reference, 2), "goal_ratio": 1.5,
            "person_s": parts["person"], "landmarks_s": parts["landmarks"], "render_s": parts["render"],
            "rest_s": round(wall - sum(parts.values()), 2),
            "landmarks_helper_s": round(timings.get("landmarks_helper", float("nan")), 2),
            "finish_s": round(timings.get("finish", float("nan")), 2),
            "peak_rss_mb": round(rss_mb), "goal_rss_mb": 2048}


def add_driver_args(ap: argparse.ArgumentParser) -> None:
    """``--photo``, ``--video`` (the driver's source), ``--seconds`` and ``--size`` (the looped, scaled driver)."""
    ap.add_argument("--photo", type=Path, default=FACES / "photos" / "fr_obama.jpg")
    ap.add_argument("--video", type=Path, default=FACES / "videos" / "lp_d12.mp4")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", type=int, default=512)


def check_inputs(args: argparse.Namespace) -> None:
    for p in (args.photo, args.video):
        if not p.is_file():
            raise SystemExit(f"{p}: not found (set HEADPUPPET_FACES or give --photo/--video)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_driver_args(ap)
    ap.add_argument("--repeats", type=int, default=3, help="start-up timings (medians)")
    ap.add_argument("--rounds", type=int, default=2, help="end-to-end runs per mode, each after its own "
                    "G-alone timing")
    args = ap.parse_args()
    check_inputs(args)
    print(json.dumps(startup(args.repeats)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        driver = make_driver(args.video, args.seconds, args.size, Path(tmp))
        from headpuppet.media.video import probe

        frames = probe(driver).num_frames
        rows: dict = {None: [], 0: []}
        for _ in range(args.rounds):
            for steps in (None, 0):  # animate's default (fine-tuning on the photo), and without it
                # G alone just before (and, in end_to_end, after) each run: the speed drifts
                before, precision = generator_seconds(frames, args.photo)
                row = end_to_end(args.photo, driver, Path(tmp), steps, before, precision)
                rows[steps].append(row)
                print(json.dumps(row), flush=True)
        for steps, runs in rows.items():
            ratios = [r["ratio"] for r in runs]
            print(json.dumps({"figure": "end_to_end_summary", **config(finetune_steps=runs[0]["finetune_steps"],
                                                                       rounds=len(runs)),
                              "ratio_median": round(statistics.median(ratios), 2), "ratio_min": min(ratios),
                              "ratio_max": max(ratios), "wall_s": [r["wall_s"] for r in runs],
                              "reference_s": [r["reference_s"] for r in runs], "goal_ratio": 1.5}), flush=True)


if __name__ == "__main__":
    main()
