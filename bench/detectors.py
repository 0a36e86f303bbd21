"""Landmark detector speed: milliseconds per frame on a real video (CPU).

    python bench/detectors.py [VIDEO] [--detector mediapipe] [--frames 200] [--static]

Decodes the frames first (decoding is not timed), creates the detector (not timed), detects once
to warm up, then times ``detect`` on every frame and prints mean / median ms per frame and how
many frames had a face.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from headpuppet.plugins import make_plugin_manager, registry

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "videos" / "dtk_m030_neutral.mp4"


def read(path: Path, limit: int) -> list[np.ndarray]:
    from headpuppet.video import read_frames

    return list(read_frames(path, max_frames=limit))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?", default=str(DEFAULT))
    ap.add_argument("--detector", default="mediapipe")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--static", action="store_true", help="mediapipe: detect on every frame (no tracking)")
    args = ap.parse_args()
    frames = read(Path(args.video), args.frames)
    opts = {"static_image_mode": True} if args.static and args.detector == "mediapipe" else {}
    det = registry(make_plugin_manager(), "landmarks").create(args.detector, **opts)
    det.detect(frames[0])
    det.reset()
    times, found = [], 0
    for f in frames:
        t0 = time.perf_counter()
        faces = det.detect(f)
        times.append((time.perf_counter() - t0) * 1000)
        found += bool(faces)
    h, w = frames[0].shape[:2]
    print(f"{args.detector}{' (static)' if args.static else ''} on {Path(args.video).name} ({w}x{h}), "
          f"{len(frames)} frames: mean {statistics.mean(times):.1f} ms/frame, "
          f"median {statistics.median(times):.1f} ms/frame, face in {found}/{len(frames)} frames")


if __name__ == "__main__":
    main()
