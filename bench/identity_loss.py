"""The ``dlib-identity`` content-loss term: its cost per training step, and its fixed face crop.

    python bench/identity_loss.py                      # timing (batch 4, 128 px, CPU) + crop check
    python bench/identity_loss.py --dataset DATA       # crop check on a preprocessed dataset
    python bench/identity_loss.py --batch 8 --size 256 --device cuda
    python bench/identity_loss.py --batch 1 --size 64 --steps 1 --per-video 2    # a quick check

1. Timing: what the term adds to one generator step, as :class:`headpuppet.training.losses.ContentLoss`
   runs it: the real frames' activations without autograd, the fake frames' with autograd, the L1
   of each pair, and the backward pass to the fake frames (which is where the generator's gradient
   comes from). Median over ``--steps`` after two warm-up steps.
2. Fixed crop: ``ContentLoss`` passes no landmarks, so :class:`DlibIdentity` cuts the fixed square
   ``FIXED_CROP`` instead of dlib's landmark alignment. On the frames of a dataset (default: a few
   shared videos preprocessed at 128 px into a temporary folder) this prints the median of dlib's
   chip rectangle in crop fractions (what ``FIXED_CROP`` was set from) and how far descriptors of
   the fixed crop are from those of the true alignment (cosine and dlib distance), next to the
   cosines of aligned chips within one video and across videos, for scale.

Prints one JSON object per line, each with ``machine``, ``cpus``, ``threads``, ``load``:

- ``identity_loss_step`` (1.): ``batch``, ``size``, ``device``, ``layers``, ``steps``, ``warmup``,
  ``ms_per_step_median``, ``ms_per_step_min``;
- with the crop check (2.), each with ``dataset``, ``videos``, ``frames``, ``per_video``:
  ``identity_loss_chip_rect``: the median of dlib's chip rectangle in crop fractions
  (``centre_x_median``, ``centre_y_median``, ``side_median``, ``side_p5``, ``side_p95``) next to
  ``fixed_crop``; ``identity_loss_fixed_crop``: fixed crop vs true alignment on the same frame
  (``cosine_median``, ``cosine_min``, ``dlib_distance_median``, ``dlib_distance_max``; the same
  person is below ``same_person_below``); ``identity_loss_aligned_scale``: aligned chips'
  ``cosine_within_video_median`` and ``cosine_across_videos_median``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _jsonl import config, emit

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "data" / "faces" / "videos"
VIDEOS = ("dtk_m030_neutral.mp4", "dtk_w009_neutral.mp4", "stt_obama_c1.mp4", "lp_d14.mp4",
          "lipnet_bbaf2n.mp4", "stt_andrew_c1.mp4")


def timing(net, batch: int, size: int, steps: int, device: str) -> list[float]:
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    real = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    base = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    times = []
    for i in range(steps + 2):
        fake = base.clone().requires_grad_(True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            target = net(real)
        acts = net(fake)
        loss = sum(F.l1_loss(a, t) for a, t in zip(acts, target))
        loss.backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
        assert fake.grad is not None and fake.grad.abs().sum() > 0
    return times


def make_dataset(out: Path) -> Path:
    from headpuppet.plugins import make_plugin_manager
    from headpuppet.data.preprocess import preprocess

    videos = [FACES / v for v in VIDEOS if (FACES / v).exists()]
    preprocess(videos, out, size=128, every=10, max_frames=12, pm=make_plugin_manager())
    return out


def crop_check(net, dataset: Path, per_video: int, label: str | None = None) -> None:
    """Print the ``identity_loss_chip_rect``, ``identity_loss_fixed_crop`` and
    ``identity_loss_aligned_scale`` lines for the frames of ``dataset``."""
    import torch.nn.functional as F

    from headpuppet.data.format import open_dataset
    from headpuppet.media.imaging import to_tensor
    from headpuppet.nets.dlib_resnet import FIXED_CROP, DlibIdentity, align_chips, chip_details

    ident = DlibIdentity(net, layers=("descriptor",))
    ds = open_dataset(dataset)
    rects, cos_fix, dist_fix, per_video_desc = [], [], [], {}
    for v in ds.videos:
        idx = np.linspace(0, v.num_frames - 1, min(per_video, v.num_frames)).round().astype(int)
        frames = np.stack([v.frame(int(i)) for i in idx])
        pts = np.asarray(v.landmarks, np.float32)[idx]
        S = frames.shape[1]
        for d in chip_details(pts):
            l, t, r, b = d.rect
            rects.append(((l + r) / 2 / S + 0.5 / S, (t + b) / 2 / S + 0.5 / S, (r - l + 1) / S))
        x = to_tensor(frames)
        with torch.no_grad():
            aligned = net(align_chips(x, pts))
            fixed = ident.descriptors(x)
        cos_fix += F.cosine_similarity(aligned, fixed).tolist()
        dist_fix += (aligned - fixed).norm(dim=1).tolist()
        per_video_desc.setdefault(v.id, []).append(F.normalize(aligned, dim=1))
    r = np.asarray(rects)
    med = np.median(r, 0)
    conf = dict(dataset=label or str(dataset), videos=len(ds.videos), frames=len(r), per_video=per_video)
    emit("identity_loss_chip_rect", config(
        **conf, what="dlib chip rectangle, fractions of the crop", centre_x_median=round(float(med[0]), 4),
        centre_y_median=round(float(med[1]), 4), side_median=round(float(med[2]), 4),
        side_p5=round(float(np.percentile(r[:, 2], 5)), 4), side_p95=round(float(np.percentile(r[:, 2], 95)), 4),
        fixed_crop=list(FIXED_CROP)))
    emit("identity_loss_fixed_crop", config(
        **conf, what="descriptors of the fixed crop vs dlib alignment, same frame",
        cosine_median=round(statistics.median(cos_fix), 4), cosine_min=round(min(cos_fix), 4),
        dlib_distance_median=round(statistics.median(dist_fix), 4), dlib_distance_max=round(max(dist_fix), 4),
        same_person_below=0.6))
    people = list(per_video_desc)
    same, diff = [], []
    for i, a in enumerate(people):
        ea = torch.cat(per_video_desc[a])
        s = ea @ ea.T
        same += s[~torch.eye(len(ea), dtype=torch.bool)].tolist()
        for b in people[i + 1:]:
            diff += (ea @ torch.cat(per_video_desc[b]).T).flatten().tolist()
    if same and diff:
        emit("identity_loss_aligned_scale", config(
            **conf, what="for scale: cosines of aligned chips",
            cosine_within_video_median=round(statistics.median(same), 4),
            cosine_across_videos_median=round(statistics.median(diff), 4)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--dataset", type=Path, default=None, help="a preprocessed dataset for the crop check")
    ap.add_argument("--per-video", type=int, default=8)
    ap.add_argument("--no-crop-check", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from headpuppet.plugins import make_plugin_manager, registry

    ident = registry(make_plugin_manager(), "perceptual").create("dlib-identity", device=args.device)
    t = timing(ident, args.batch, args.size, args.steps, args.device)
    emit("identity_loss_step", config(
        batch=args.batch, size=args.size, device=args.device, layers=list(ident.layers), steps=len(t), warmup=2,
        what="forward real + forward/backward fake", ms_per_step_median=round(statistics.median(t), 1),
        ms_per_step_min=round(min(t), 1)))
    if args.no_crop_check:
        return
    net = ident.net
    if args.dataset is not None:
        crop_check(net, args.dataset, args.per_video)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            crop_check(net, make_dataset(Path(tmp) / "ds"), args.per_video,
                       label="shared videos at 128 px, every 10th frame, at most 12 per video: " + ", ".join(VIDEOS))


if __name__ == "__main__":
    main()
