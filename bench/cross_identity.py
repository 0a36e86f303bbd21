"""Cross-identity reenactment on held-out people: does the output stay the person in the photo, and
does its mouth follow the driver?

For each (source photo, driver video) pair of *different* people, runs ``animate``'s own steps
(prepare the source, track the driver, retarget relatively, render with G) on the first ``--frames``
frames and measures, per frame:

* identity: the Euclidean distance between dlib's face descriptor (:mod:`headpuppet.nets.dlib_resnet`,
  the converted ``dlib_face_recognition_resnet_model_v1``) of the output and of the source crop; dlib
  calls two faces the same person below 0.6. Also the distance to the driver's own face (it should
  stay far: the output must not become the driver). Landmarks for the chips are detected on the
  output itself (mediapipe);
* shimmer: the mean frame-to-frame change of the output over that of the driver's crop;
* mouth: the inner-lip opening (points 62/66, over the interocular distance) of the output, detected,
  against the driver's; their Pearson correlation over frames.

The model runs as ``animate`` runs it by default: fine-tuned on the photo for the model's
``finetune.steps`` (``--finetune-steps 0``: feed-forward). ``--methods model,warp`` adds the training-free TPS warp of the photo as a comparator. Prints one
JSON line per pair and method, then a summary line per method; ``--sheet`` writes a contact sheet
(per pair: photo | driver frames over output frames).

Usage::

    python bench/cross_identity.py weights/demo --frames 40 --sheet docs/images/cross_identity.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
#: held out of the shipped model's training (MODEL_CARD.md): photo of one person, video of another
DEFAULT_PAIRS = [
    ("photos/fr_obama.jpg", "videos/stt_andrew_c1.mp4"),
    ("photos/stt_andrew_c2.png", "videos/stt_obama_c1.mp4"),
    ("photos/fr_obama2.jpg", "videos/dtk_w009_neutral.mp4"),
    ("photos/stt_andrew_c1.png", "videos/dtk_w009_happy.mp4"),
    ("photos/stt_obama_c3.png", "videos/stt_andrew_c2.mp4"),
]


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """``(T, 68, 2)`` -> ``(T,)`` inner-lip gap (62-66, 61-67, 63-65 averaged) over the interocular distance."""
    gap = np.mean([np.linalg.norm(points[:, a] - points[:, b], axis=-1) for a, b in ((62, 66), (61, 67), (63, 65))], 0)
    iod = np.linalg.norm(points[:, 36:42].mean(1) - points[:, 42:48].mean(1), axis=-1)
    return gap / np.maximum(iod, 1e-6)


def detect_all(detector, frames: np.ndarray) -> np.ndarray:
    detector.reset()
    out = []
    for f in frames:
        faces = detector.detect(f)
        out.append(max(faces, key=lambda x: x.area).points if faces else np.full((68, 2), np.nan, np.float32))
    return np.stack(out).astype(np.float32)


def descriptors(net, images: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Raw 128-d dlib descriptors (NaN rows where no landmarks)."""
    from headpuppet.media.imaging import to_tensor
    from headpuppet.nets.dlib_resnet import extract_chips

    ok = np.isfinite(points).all((1, 2))
    out = np.full((len(images), 128), np.nan)
    if ok.any():
        chips = extract_chips(np.asarray(images)[ok], points[ok])
        with torch.no_grad():
            out[ok] = net(to_tensor(chips)).double().numpy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", nargs="?", default=None, help="default: the shipped model")
    ap.add_argument("--faces", default=str(FACES))
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--methods", default="model,warp")
    ap.add_argument("--finetune-steps", type=int, default=None,
                    help="fine-tune on the photo first (FT); default: the model's finetune.steps, as animate does; 0: FF")
    ap.add_argument("--pair", nargs=2, action="append", metavar=("PHOTO", "VIDEO"),
                    help="a photo and a driver video (paths, or relative to --faces; PHOTO may be 'astronaut', "
                         "scikit-image's public-domain photo); repeatable [default: five held-out pairs]")
    ap.add_argument("--sheet", help="write a contact sheet PNG here")
    ap.add_argument("--show-driver", choices=("frames", "landmarks"), default="frames",
                    help="the driver row of the sheet: its frames, or only its landmark images (a sheet "
                         "that shows no face of the driver)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from headpuppet.evaluation.baselines import tps_warp
    from headpuppet.media.crop import crop_frame
    from headpuppet.media.imaging import read_image, write_image
    from headpuppet.fewshot.animator import Animator, default_checkpoint
    from headpuppet.fewshot.pipeline import track_driver
    from headpuppet.nets.dlib_resnet import SAME_PERSON_THRESHOLD, load_dlib_resnet
    from headpuppet.fewshot.retarget import prepare_track
    from headpuppet.fewshot.sources import open_driver

    faces = Path(args.faces)
    animator = Animator.from_checkpoint(args.checkpoint or default_checkpoint())
    detector = animator.make_detector()
    if args.finetune_steps is None:  # animate's default
        args.finetune_steps = animator.default_finetune_steps
    net = load_dlib_resnet().eval()
    methods = [m for m in args.methods.split(",") if m]
    summary: dict[str, dict[str, list]] = {m: {"within": [], "corr": [], "dist": [], "to_driver": [], "flicker": []}
                                           for m in methods}
    rows = []
    for photo, video in args.pair or DEFAULT_PAIRS:
        if photo == "astronaut":
            from skimage import data

            image = data.astronaut()
        else:
            photo_path = Path(photo) if Path(photo).exists() else faces / photo
            if not photo_path.exists():
                continue
            image = read_image(photo_path)
        video = str(Path(video) if Path(video).exists() else faces / video)
        if not Path(video).exists():
            continue
        person = animator.prepare_source([image], detector=detector, labels=[photo])
        if args.finetune_steps and "model" in methods:
            person = animator.fine_tune(person, args.finetune_steps)
        driver = open_driver(video)
        points, found, iris, box = track_driver(driver, detector, animator.size)
        n = min(args.frames, len(points))
        track = prepare_track(points[:n], found[:n], None, relative=True, source=person.points[0])
        drv_frames = np.stack([crop_frame(f, box, animator.size) for _, f in zip(range(n), driver.frames())])
        drv_desc = descriptors(net, drv_frames, points[:n])
        src_desc = descriptors(net, person.frames[:1], person.points[:1])[0]
        mouth_drv = mouth_opening(points[:n])
        outputs = {}
        for m in methods:
            if m == "model":
                out = animator.render(person, track.points)
            elif m == "warp":
                out = np.stack([tps_warp(person.frames[0], person.points[0], p) for p in track.points])
            else:
                raise SystemExit(f"unknown method {m}")
            outputs[m] = out
            pts = detect_all(detector, out)
            desc = descriptors(net, out, pts)
            dist = np.linalg.norm(desc - src_desc, axis=1)                 # NaN where no face was found
            to_drv = np.linalg.norm(desc - drv_desc, axis=1)
            mouth = mouth_opening(pts)
            ok = np.isfinite(mouth) & np.isfinite(mouth_drv)
            corr = float(np.corrcoef(mouth[ok], mouth_drv[ok])[0, 1]) if ok.sum() > 2 else float("nan")
            within = float(np.mean(np.nan_to_num(dist, nan=np.inf) < SAME_PERSON_THRESHOLD))
            # temporal shimmer: mean frame-to-frame change of the output over the driver crop's
            flicker = float(np.abs(np.diff(out.astype(np.float32), axis=0)).mean()
                            / max(np.abs(np.diff(drv_frames.astype(np.float32), axis=0)).mean(), 1e-6))
            rec = {"photo": photo, "driver": Path(video).name, "method": m, "frames": int(n), "flicker_vs_driver": flicker,
                   "face_found": float(np.isfinite(dist).mean()), "within_0.6": within,
                   "dist_to_source_median": float(np.nanmedian(dist)), "dist_to_driver_median": float(np.nanmedian(to_drv)),
                   "mouth_corr": corr, "mouth_range_out": float(np.nanstd(mouth)), "mouth_range_driver": float(np.nanstd(mouth_drv))}
            print(json.dumps(rec), flush=True)
            s = summary[m]
            s["within"].append(within), s["corr"].append(corr), s["dist"].append(rec["dist_to_source_median"])
            s["to_driver"].append(rec["dist_to_driver_median"]), s["flicker"].append(flicker)
        if args.show_driver == "landmarks":
            from headpuppet.media.landmarks import rasterise

            drv_frames = np.stack([rasterise(p, animator.size) for p in points[:n]])
        rows.append((person.frames[0], drv_frames, outputs))
    for m, s in summary.items():
        if s["within"]:
            print(json.dumps({"summary": m, "pairs": len(s["within"]), "finetune_steps": args.finetune_steps,
                              "within_0.6_mean": float(np.mean(s["within"])), "within_0.6_min": float(np.min(s["within"])),
                              "mouth_corr_mean": float(np.nanmean(s["corr"])), "dist_to_source_median": float(np.median(s["dist"])),
                              "dist_to_driver_median": float(np.median(s["to_driver"])),
                              "flicker_vs_driver_mean": float(np.mean(s["flicker"]))}), flush=True)
    if args.sheet and rows:
        S = animator.size
        cols = 6
        blocks = []
        for src, drv, outs in rows:
            idx = np.linspace(0, len(drv) - 1, cols).round().astype(int)
            pad = np.full_like(src, 255)
            lines = [np.concatenate([src] + [drv[i] for i in idx], 1)]
            for m in methods:
                lines.append(np.concatenate([pad] + [outs[m][i] for i in idx], 1))
            blocks.append(np.concatenate(lines, 0))
            blocks.append(np.full((6, S * (cols + 1), 3), 255, np.uint8))
        write_image(args.sheet, np.concatenate(blocks[:-1], 0))
        print(json.dumps({"sheet": args.sheet, "layout": f"per pair: photo | driver x{cols}; then one row per method: {methods}"}))


if __name__ == "__main__":
    main()
