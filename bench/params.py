"""Parameter counts and model FLOPs of E, G (with P) and D for the presets.

Zakharov et al. 2019, section 4, state the sizes of the paper's networks: "the embedder has 15
million parameters, the generator has 38 million parameters. The convolutional part of the
discriminator has 20 million parameters." They state no FLOPs. This script prints our counts next to
those figures.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one sample (batch 1) in eval
mode: convolutions, linear layers and the attention matmuls; element-wise ops (norms, activations,
pooling) are not counted. Shown as multiply-accumulates (GMAC = FLOPs / 2). By default the networks
run on the ``meta`` device, so nothing is computed and the count is exact for the shapes.

Prints one JSON object per line, two per preset, each with ``machine``, ``cpus``, ``threads``,
``load`` and the preset's configuration (``preset``, ``size``, ``ch``, ``max_ch``, ``emb_dim``,
``k_shots``, ``discriminator``, ``psi_dim``, ``device``):

- ``model_params``: millions of parameters of E (``e_params_m``), G with P (``g_params_m``), P
  alone (``p_params_m``), D without W (``d_params_m``: conv part, w0, b) and W for ``num_videos``
  videos (``w_params_m``); for paper-256 also the paper's figures (``paper_e_params_m``...) and
  ours over the paper's (``e_over_paper``...; D only with the paper's projection discriminator);
- ``model_gmac``: forward GMAC per sample: ``e_one_shot_gmac``, ``e_k_shots_gmac``, ``g_gmac``
  (P included; P alone ``p_mmac``), ``d_gmac``, ``ek_g_d_gmac`` (E x K + G + D) and
  ``episode_gmac`` (a meta-learning episode: D on real and fake).

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

from _jsonl import config, emit  # bench/ is on the path (a script's folder; bench/train.py adds it)

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

    conf = dict(preset=preset, size=m.image_size, ch=m.ch, max_ch=m.max_ch, emb_dim=m.emb_dim, k_shots=k,
                discriminator=m.discriminator, psi_dim=G.psi_dim, device=device)
    emit("model_params", config(
        **conf, num_videos=num_videos, e_params_m=round(n_e / 1e6, 3), g_params_m=round(n_g / 1e6, 3),
        p_params_m=round(n_p / 1e6, 3), d_params_m=round(n_d / 1e6, 3), w_params_m=round(n_w / 1e6, 3),
        **{f"paper_{key.lower()}_params_m": round(v / 1e6, 3) for key, v in paper.items()},
        **{f"{key.lower()}_over_paper": round(n / paper[key], 3) for key, n in (("E", n_e), ("G", n_g), ("D", n_d))
           if key in paper}))

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
    emit("model_gmac", config(
        **conf, batch=1, what="forward GMAC per sample (FLOPs / 2)", e_one_shot_gmac=round(f_e1 / 1e9, 3),
        e_k_shots_gmac=round(f_ek / 1e9, 3), g_gmac=round(f_g / 1e9, 3), p_mmac=round(f_p / 1e6, 3),
        d_gmac=round(f_d / 1e9, 3), ek_g_d_gmac=round((f_ek + f_g + f_d) / 1e9, 3),
        episode_gmac=round((f_ek + f_g + 2 * f_d) / 1e9, 3)))


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
