"""Where a model wins or loses against the warp baseline, on a held-out dataset: per-pixel error maps.

    python bench/error_map.py weights/demo report/model/heldout --shots 1 --out report/model/error_map

Same protocol as ``headpuppet evaluate`` (seed 0, 4 target frames per video from its second half,
shots from the first part), feed-forward (``--mode ff``) or fine-tuned (``--mode ft``). For every target
frame: the mean absolute error (0-255, over RGB) of the model's frame and of the warp's. Prints one JSON
line per video (SSIM difference model - warp) and a summary line: the mean of (model error - warp
error) over the whole frame, over its centre (the middle half) and over a ``--band`` px band along the
image border. Writes ``OUT_map.png`` (grey = equal, bright = the model is worse, dark = better; 20x
contrast) and ``OUT_sheet.png`` (real | warp | model | difference, one row per target frame).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity

import headpuppet
from _jsonl import config  # bench/ is on the path (the script's folder)
from headpuppet.data.format import open_dataset
from headpuppet.evaluation.baselines import WarpBaseline
from headpuppet.evaluation.methods import ModelMethod
from headpuppet.evaluation.protocol import plan_video


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("data", help="a preprocessed dataset of held-out people")
    ap.add_argument("--shots", type=int, default=1)
    ap.add_argument("--mode", choices=("ff", "ft"), default="ff")
    ap.add_argument("--frames-per-video", type=int, default=4)
    ap.add_argument("--band", type=int, default=16)
    ap.add_argument("--out", default="error_map")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = headpuppet.load_model(args.checkpoint, precision="fp32")
    ds = open_dataset(args.data)
    method, warp = ModelMethod(model, args.mode), WarpBaseline("tps")
    size = model.size
    diff_sum = np.zeros((size, size))
    rows, s_model, s_warp = [], [], []
    for v in ds.videos:
        plan = plan_video(v.id, v.num_frames, args.shots, args.frames_per_video, 0)
        if plan is None:
            continue
        shot_idx, target_idx = plan
        shots = np.stack([v.frame(i) for i in shot_idx])
        real = np.stack([v.frame(i) for i in target_idx])
        pts, tpts = v.landmarks[shot_idx], v.landmarks[target_idx]
        out_m = method.render(method.prepare(shots, pts, None, v.id), tpts)
        out_w = warp.render(warp.prepare(shots, pts, None, v.id), tpts)
        e_m = np.abs(out_m.astype(float) - real).mean(-1)
        e_w = np.abs(out_w.astype(float) - real).mean(-1)
        diff_sum += (e_m - e_w).sum(0)
        sm = [structural_similarity(a, b, channel_axis=2) for a, b in zip(out_m, real)]
        sw = [structural_similarity(a, b, channel_axis=2) for a, b in zip(out_w, real)]
        s_model += sm
        s_warp += sw
        for i in range(len(target_idx)):
            d = np.clip((e_m[i] - e_w[i]) * 4 + 128, 0, 255).astype(np.uint8)
            rows.append(np.concatenate([real[i], out_w[i], out_m[i], np.repeat(d[..., None], 3, 2)], 1))
        print(json.dumps({"video": v.id, "frames": len(target_idx),
                          "ssim_model_minus_warp": round(float(np.mean(sm) - np.mean(sw)), 5)}), flush=True)
    n = len(s_model)
    dmap = diff_sum / n
    b, q = args.band, size // 4
    inner = dmap[b:size - b, b:size - b]
    band = (dmap.sum() - inner.sum()) / (dmap.size - inner.size)
    print(json.dumps({"figure": "error_map", **config(),
                      "checkpoint": str(args.checkpoint), "mode": args.mode, "shots": args.shots, "frames": n,
                      "ssim_model": round(float(np.mean(s_model)), 5), "ssim_warp": round(float(np.mean(s_warp)), 5),
                      "err_diff_mean": round(float(dmap.mean()), 3),
                      "err_diff_centre": round(float(dmap[q:size - q, q:size - q].mean()), 3),
                      f"err_diff_border_{b}px": round(float(band), 3)}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    vis = np.clip(dmap * 20 + 128, 0, 255).astype(np.uint8)
    Image.fromarray(vis).resize((3 * size, 3 * size), Image.NEAREST).save(f"{args.out}_map.png")
    Image.fromarray(np.concatenate(rows, 0)).save(f"{args.out}_sheet.png")


if __name__ == "__main__":
    main()
