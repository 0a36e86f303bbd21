"""Landmark detector speed: milliseconds per frame on a real video (CPU).

    python bench/detectors.py [VIDEO] [--detector mediapipe] [--frames 200] [--static]
    python bench/detectors.py --detector mediapipe dlib      # both on the same decoded frames
    python bench/detectors.py --frames 2                     # a quick check

Decodes the frames first (decoding is not timed), creates each detector (not timed), detects once
to warm up, then times ``detect`` on every frame.

Prints one JSON object per line, ``detector``, one per detector, with ``machine``, ``cpus``,
``load``, the configuration (``detector``, ``static``: mediapipe without tracking, ``video``,
``width``, ``height``, ``frames``), then ``ms_per_frame_mean``, ``ms_per_frame_median`` and
``frames_with_face``. With several detectors, the later ones also get ``points_vs`` (the first
one), ``frames_compared`` and ``points_error_interocular``: the mean distance between their points
per frame, over the inter-ocular distance. ``dlib`` comes from the plugin
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
    from _jsonl import config, emit

    h, w = frames[0].shape[:2]
    first = None
    for name in args.detector:
        static = bool(args.static and name == "mediapipe")
        det = registry(pm, "landmarks").create(name, **({"static_image_mode": True} if static else {}))
        times, points = run(det, frames)
        fields = dict(detector=name, static=static, video=Path(args.video).name, width=w, height=h,
                      frames=len(frames), ms_per_frame_mean=round(statistics.mean(times), 2),
                      ms_per_frame_median=round(statistics.median(times), 2),
                      frames_with_face=sum(p is not None for p in points))
        if first is None:
            first = points
        else:
            from headpuppet.media.landmarks import landmark_error

            d = [landmark_error(p, q) for p, q in zip(points, first) if p is not None and q is not None]
            fields.update(points_vs=args.detector[0], frames_compared=len(d),
                          points_error_interocular=round(float(np.mean(d)), 4) if d else None)
        emit("detector", config(**fields))


if __name__ == "__main__":
    main()
