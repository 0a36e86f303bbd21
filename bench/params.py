"""Parameter counts and model FLOPs of E, G (with P) and D for the presets.

Zakharov et al. 2019, section 4, state the sizes of the paper's networks: "the embedder has 15
million parameters, the generator has 38 million parameters. The convolutional part of the
discriminator has 20 million parameters." They state no FLOPs. This script prints our counts next to
those figures.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one sample (batch 1) in eval
mode: convolutions, linear layers and the attention matmuls; element-wise ops (norms, activations,
pooling) are not counted. Shown as multiply-accumulates (GMAC = FLOPs / 2). By default the networks
run on the ``meta`` device, so nothing is computed and the count is exact for the shapes.

Usage::

    python bench/params.py                       # paper-256 and small-128
    python bench/params.py --presets paper-256 --num-videos 145000 --device cpu
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from headpuppet.config import load_config
from headpuppet.models import build_networks, count_parameters
from headpuppet.plugins import make_plugin_manager

PAPER = {"paper-256": {"E": 15e6, "G": 38e6, "D": 20e6}}  # section 4, rounded to millions


def macs(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() // 2


def report(preset: str, num_videos: int, device: str, discriminator: str | None) -> None:
    cfg = load_config(preset)
    if discriminator:
        cfg.model.discriminator = discriminator
    m, k = cfg.model, cfg.train.k_shots
    with torch.device(device):
        nets = build_networks(cfg, num_videos, pm=make_plugin_manager(), device=device).eval()
    E, G, D = nets.embedder, nets.generator, nets.discriminator
    n_e, n_g, n_p = count_parameters(E), count_parameters(G), count_parameters(G.projection)
    n_w = D.W.numel()
    n_d = count_parameters(D) - n_w
    # the paper's figures describe its own discriminator only
    paper = dict(PAPER.get(preset, {}))
    if m.discriminator != "projection":
        paper.pop("D", None)

    def row(name: str, n: int, key: str | None = None) -> None:
        ref = f"   paper: {paper[key] / 1e6:.0f}M" if key in paper else ""
        print(f"  {name:<44}{n / 1e6:9.2f}M{ref}")

    print(f"{preset}: {m.image_size}px, ch {m.ch}->{m.max_ch}, N {m.emb_dim}, K {k}, "
          f"discriminator {m.discriminator}, psi_dim {G.psi_dim}")
    print(" parameters")
    row("E (embedder)", n_e, "E")
    row("G (generator, incl. P)", n_g, "G")
    row("  of which P (N x psi_dim + bias)", n_p)
    row("D without W (conv part, w0, b)", n_d, "D")
    row(f"W for {num_videos} videos ({m.emb_dim} each)", n_w)

    s = m.image_size
    x_k = torch.zeros(1, k, 3, s, s, device=device)
    x = torch.zeros(1, 3, s, s, device=device)
    e = torch.zeros(1, m.emb_dim, device=device)
    idx = torch.zeros(1, dtype=torch.long, device=device)
    with torch.no_grad():
        f_e1 = macs(lambda: E.embed(x, x))
        f_ek = macs(lambda: E(x_k, x_k))
        f_p = macs(lambda: G.project(e))
        f_g = macs(lambda: G(x, e=e))
        f_d = macs(lambda: D(x, x, video_idx=idx))
    print(" forward GMAC per sample")
    print(f"  {'E, one shot':<44}{f_e1 / 1e9:9.2f}")
    print(f"  {f'E, K = {k} shots':<44}{f_ek / 1e9:9.2f}")
    print(f"  {'G (incl. P: ' + f'{f_p / 1e6:.1f} MMAC)':<44}{f_g / 1e9:9.2f}")
    print(f"  {'D':<44}{f_d / 1e9:9.2f}")
    print(f"  {'E x K + G + D':<44}{(f_ek + f_g + f_d) / 1e9:9.2f}")
    print(f"  {'meta-learning episode (D on real and fake)':<44}{(f_ek + f_g + 2 * f_d) / 1e9:9.2f}")
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=["paper-256", "small-128"])
    ap.add_argument("--num-videos", type=int, default=1000, help="rows of the discriminator's W")
    ap.add_argument("--device", default="meta", help="meta (no compute, default) or cpu / cuda")
    ap.add_argument("--discriminator", default=None, help="override model.discriminator (e.g. multiscale)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for preset in args.presets:
        report(preset, args.num_videos, args.device, args.discriminator)


if __name__ == "__main__":
    main()
