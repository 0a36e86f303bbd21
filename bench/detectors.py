"""Landmark detector speed: milliseconds per frame on a real video (CPU).

    python bench/detectors.py [VIDEO] [--detector mediapipe] [--frames 200] [--static]
    python bench/detectors.py --detector mediapipe dlib      # both on the same decoded frames

Decodes the frames first (decoding is not timed), creates each detector (not timed), detects once
to warm up, then times ``detect`` on every frame and prints mean / median ms per frame and how
many frames had a face. With several detectors, also the mean distance between their points per
frame, over the inter-ocular distance (against the first one). ``dlib`` comes from the plugin
package ``examples/headpuppet-dlib-detector``; when it is not pip-installed it is loaded from that
folder.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from headpuppet.plugins import make_plugin_manager, registry

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "videos" / "dtk_m030_neutral.mp4"
DLIB_PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "headpuppet-dlib-detector"


def read(path: Path, limit: int) -> list[np.ndarray]:
    from headpuppet.media.video import read_frames

    return list(read_frames(path, max_frames=limit))


def run(det, frames: list[np.ndarray]) -> tuple[list[float], list]:
    det.detect(frames[0])
    det.reset()
    times, points = [], []
    for f in frames:
        t0 = time.perf_counter()
        faces = det.detect(f)
        times.append((time.perf_counter() - t0) * 1000)
        points.append(faces[0].points if faces else None)
    return times, points


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?", default=str(DEFAULT))
    ap.add_argument("--detector", nargs="+", default=["mediapipe"])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--static", action="store_true", help="mediapipe: detect on every frame (no tracking)")
    args = ap.parse_args()
    frames = read(Path(args.video), args.frames)
    pm = make_plugin_manager()
    if "dlib" in args.detector and "dlib" not in registry(pm, "landmarks"):
        pm = make_plugin_manager(plugins_dir=DLIB_PLUGIN)  # the example package, not pip-installed
    h, w = frames[0].shape[:2]
    first = None
    for name in args.detector:
        opts = {"static_image_mode": True} if args.static and name == "mediapipe" else {}
        det = registry(pm, "landmarks").create(name, **opts)
        times, points = run(det, frames)
        found = sum(p is not None for p in points)
        extra = ""
        if first is None:
            first = points
        else:
            from headpuppet.media.landmarks import landmark_error

            d = [landmark_error(p, q) for p, q in zip(points, first) if p is not None and q is not None]
            extra = f", points vs {args.detector[0]}: {np.mean(d):.3f} inter-ocular" if d else ""
        label = f"{name}{' (static)' if args.static and name == 'mediapipe' else ''}"
        print(f"{label} on {Path(args.video).name} ({w}x{h}), {len(frames)} frames: "
              f"mean {statistics.mean(times):.1f} ms/frame, median {statistics.median(times):.1f} ms/frame, "
              f"face in {found}/{len(frames)} frames{extra}")


if __name__ == "__main__":
    main()
