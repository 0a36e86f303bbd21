"""Meta-learning (headpuppet.training): episodes, steps, the loop, resume, CLI - tiny CPU configs.

The dataset is written on the fly in the documented on-disk format by headpuppet.testing.make_dataset:
jittered crops of scikit-image's astronaut, a real face photo, with a hand-placed 68-point landmark
template moved by the same jitter.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from headpuppet.config import load_config
from headpuppet.errors import WeightsMissingError
from headpuppet.testing import TINY_SIZE, make_dataset, strip_ansi, tiny_config

torch.set_num_threads(1)

S = TINY_SIZE


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "ds")


@pytest.fixture(scope="module")
def pm_mod():
    from headpuppet.plugins import make_plugin_manager

    return make_plugin_manager()


# ----------------------------------------------------------------------------------------- episodes

def test_episode_shapes_distinct_target_and_determinism(dataset):
    from headpuppet.data.episodes import EpisodeDataset
    from headpuppet.data.format import open_dataset

    ds = EpisodeDataset(open_dataset(dataset), k_shots=2, size=S, seed=3)
    item = ds[(0, 1, 0)]
    assert item["shots"].shape == (2, 3, S, S) and item["shot_landmarks"].shape == (2, 3, S, S)
    assert item["target"].shape == (3, S, S) and item["target_landmarks"].shape == (3, S, S)
    assert item["video_idx"].dtype == torch.long and int(item["video_idx"]) == 1
    assert item["target"].min() >= -1 and item["target"].max() <= 1
    assert item["target_landmarks"].max() > 0  # the face's lines are drawn
    f = item["frame_idx"].tolist()
    assert f[0] not in f[1:] and len(set(f)) == 3
    again = ds[(0, 1, 0)]
    assert all(torch.equal(item[k], again[k]) for k in item)
    other_epochs = {tuple(ds[(e, 1, 0)]["frame_idx"].tolist()) for e in range(6)}
    assert len(other_epochs) > 1
    # a size other than the stored one: resized frames, scaled landmarks
    big = EpisodeDataset(open_dataset(dataset), k_shots=2, size=64, seed=3)[(0, 1, 0)]
    assert big["target"].shape == (3, 64, 64)


def test_short_video_keeps_target_out_of_shots(dataset):
    from headpuppet.data.episodes import EpisodeDataset
    from headpuppet.data.format import open_dataset

    ds = EpisodeDataset(open_dataset(dataset), k_shots=8, size=S)  # 5 frames < K + 1
    for e in range(10):
        f = ds.choose_frames(5, e, 0)
        assert len(f) == 9 and f[0] not in f[1:]
    assert ds.choose_frames(2, 0, 0).tolist().count(ds.choose_frames(2, 0, 0)[0]) == 1


def test_sampler_covers_every_video_once_per_epoch_across_ranks():
    from headpuppet.training.distributed import EpisodeBatchSampler

    n, bs, world = 7, 2, 2
    seen = []
    for r in range(world):
        s = EpisodeBatchSampler(n, bs, seed=1, rank=r, world_size=world)
        it = iter(s)
        batches = [next(it) for _ in range(s.batches_per_epoch)]
        seen += [k[1] for b in batches for k in b]
        assert all(k[0] == 0 for b in batches for k in b)
    assert set(seen) == set(range(n))  # 8 slots for 7 videos: one wrapped, none missed
    # starting at a step continues the same stream
    s = EpisodeBatchSampler(n, bs, seed=1)
    full = [b for b, _ in zip(s, range(9))]
    assert [b for b, _ in zip(EpisodeBatchSampler(n, bs, seed=1, start_step=5), range(4))] == full[5:]
    # fewer videos than the batch: repeated, with distinct repeat indices
    tiny = next(iter(EpisodeBatchSampler(1, 3, seed=0)))
    assert [k[1] for k in tiny] == [0, 0, 0] and len({k[2] for k in tiny}) == 3


# ------------------------------------------------------------------------------------------- steps

def _nets_and_batch(dataset, pm, cfg):
    from headpuppet.data.episodes import EpisodeDataset, collate
    from headpuppet.data.format import open_dataset
    from headpuppet.models import build_networks

    torch.manual_seed(0)
    ds = EpisodeDataset(open_dataset(dataset), k_shots=2, size=S)
    nets = build_networks(cfg, ds.num_videos, pm)
    return nets, ds, collate([ds[(0, 0, 0)], ds[(0, 1, 0)]])


def test_steps_update_only_their_networks_and_name_terms(dataset, pm_mod):
    from headpuppet.training.losses import ContentLoss
    from headpuppet.training.steps import discriminator_step, generator_step

    cfg = tiny_config()
    nets, _, batch = _nets_and_batch(dataset, pm_mod, cfg)
    opt_g = torch.optim.Adam(list(nets.embedder.parameters()) + list(nets.generator.parameters()), lr=1e-3)
    opt_d = torch.optim.Adam(nets.discriminator.parameters(), lr=1e-3)
    content = ContentLoss(pm_mod, cfg.loss)
    snap = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in nets.items()}

    d = discriminator_step(nets, batch, opt_d, cfg)
    assert {"Loss/D/real", "Loss/D/fake", "Loss/D/mch", "Loss/D/total"} <= set(d)
    assert all(np.isfinite(v) for v in d.values())
    for n in ("embedder", "generator"):  # D step must not move E or G parameters
        params = dict(getattr(nets, n).named_parameters())
        assert all(torch.equal(params[k], snap[n][k]) for k in params)
    D_params = dict(nets.discriminator.named_parameters())
    assert any(not torch.equal(D_params[k], snap["discriminator"][k]) for k in D_params)

    snap_d = {k: v.clone() for k, v in nets.discriminator.named_parameters()}
    grads_d = {k: v.grad.clone() for k, v in nets.discriminator.named_parameters() if v.grad is not None}
    g = generator_step(nets, batch, opt_g, content, cfg)
    assert {"Loss/G/laplacian-pyramid", "Loss/G/adv", "Loss/G/fm", "Loss/G/mch", "Loss/G/total"} <= set(g)
    assert all(torch.equal(p, snap_d[k]) for k, p in nets.discriminator.named_parameters())
    assert all(p.requires_grad for p in nets.discriminator.parameters())  # flags restored
    # no gradient reached D in the G step (its grads are still the D step's)
    assert all(torch.equal(p.grad, grads_d[k]) for k, p in nets.discriminator.named_parameters() if k in grads_d)
    moved = [k for k, p in nets.generator.named_parameters() if not torch.equal(p, snap["generator"][k])]
    assert moved and any(p.grad is not None for p in nets.embedder.parameters())


def test_steps_with_psi_and_w_for_fine_tuning(dataset, pm_mod):
    """Fine-tuning's form: trainable psi' and w', no embedder."""
    from headpuppet.training.losses import ContentLoss
    from headpuppet.training.steps import discriminator_step, generator_step

    cfg = tiny_config()
    nets, _, batch = _nets_and_batch(dataset, pm_mod, cfg)
    with torch.no_grad():
        e, _ = nets.embedder(batch["shots"][:1], batch["shot_landmarks"][:1])
        psi = torch.nn.Parameter(nets.generator.project(e))
        w = torch.nn.Parameter(nets.discriminator.w0.detach()[None] + e)

    class FT:
        embedder = None
        generator = nets.generator
        discriminator = nets.discriminator

    opt_g = torch.optim.Adam(list(nets.generator.parameters()) + [psi], lr=1e-3)
    opt_d = torch.optim.Adam(list(nets.discriminator.parameters()) + [w], lr=1e-3)
    b = {"target": batch["target"], "target_landmarks": batch["target_landmarks"]}
    psi0, w0 = psi.detach().clone(), w.detach().clone()
    d = discriminator_step(FT, b, opt_d, cfg, w=w.expand(2, -1), psi=psi.detach().expand(2, -1), match_w=False)
    g = generator_step(FT, b, opt_g, ContentLoss(pm_mod, cfg.loss), cfg, w=w.detach().expand(2, -1),
                       psi=psi.expand(2, -1), use_match=False)
    assert "Loss/G/mch" not in g and "Loss/D/mch" not in d
    assert not torch.equal(psi.detach(), psi0) and not torch.equal(w.detach(), w0)


# -------------------------------------------------------------------------------------------- loop

def _state(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    folder = run / "checkpoints" / (run / "checkpoints" / "latest").read_text().strip()
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update({f"{f.stem}.{k}": v for k, v in load_file(str(f)).items()})
    return out


def test_run_folder_files_and_resume_is_bit_exact(dataset, pm_mod, tmp_path):
    from headpuppet.training import meta_train
    from headpuppet.training.checkpoint import load_state

    cfg = tiny_config(steps=4, ema=0.9, sample_every=2, checkpoint_every=3)
    straight = meta_train(cfg, dataset, out_root=tmp_path / "a", pm=pm_mod, device="cpu")
    assert straight.name == "00000-tiny-k2"
    for rel in ("config.yaml", "stats.jsonl", "samples/step-0000002.png", "samples/step-0000004.png",
                "samples/losses.png", "checkpoints/latest", "checkpoints/step-0000003/meta.json",
                "checkpoints/step-0000004/generator_ema.safetensors", "checkpoints/step-0000004/state.pt"):
        assert (straight / rel).exists(), rel
    stats = [json.loads(x) for x in (straight / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats] == [1, 2, 3, 4]
    assert {"Loss/G/laplacian-pyramid", "Loss/G/adv", "Loss/G/fm", "Loss/G/mch", "Loss/D/real", "Loss/D/fake",
            "Progress/lr_g", "Progress/lr_d", "Timing/sec_per_step", "Timing/samples_per_sec"} <= set(stats[0])

    half = meta_train(cfg, dataset, out_root=tmp_path / "b", pm=pm_mod, device="cpu", max_steps=2)
    assert (half / "checkpoints" / "latest").read_text().strip() == "step-0000002"
    assert load_state(half / "checkpoints" / "step-0000002")["step"] == 2
    resumed = meta_train(None, dataset, out_root=tmp_path / "b", pm=pm_mod, device="cpu", resume=half)
    assert resumed == half
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), \
        [k for k in a if not torch.equal(a[k], b[k])][:5]
    stats_b = [json.loads(x) for x in (half / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in stats_b] == [1, 2, 3, 4]
    assert [r["Loss/G/total"] for r in stats_b] == [r["Loss/G/total"] for r in stats]
    # keep_checkpoints=2 keeps the last two step folders
    assert sorted(p.name for p in (straight / "checkpoints").glob("step-*")) == ["step-0000003", "step-0000004"]


def test_resume_rejects_another_model(dataset, pm_mod, tmp_path):
    from headpuppet.errors import CheckpointError
    from headpuppet.training import meta_train

    run = meta_train(tiny_config(steps=1), dataset, out_root=tmp_path, pm=pm_mod, device="cpu")
    other = tiny_config(steps=2)
    other.model.emb_dim = 8
    with pytest.raises(CheckpointError, match="model.emb_dim"):
        meta_train(other, dataset, out_root=tmp_path, pm=pm_mod, device="cpu", resume=run)


def test_sigterm_saves_a_checkpoint_and_stops(dataset, pm_mod, tmp_path, monkeypatch):
    import os
    import signal

    from headpuppet.training import loop

    real_step = loop.train_step
    calls = []

    def step_then_signal(*a, **k):
        out = real_step(*a, **k)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    run = loop.meta_train(tiny_config(steps=50), dataset, out_root=tmp_path, pm=pm_mod, device="cpu")
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-0000002"
    assert len(calls) == 2
    assert signal.getsignal(signal.SIGTERM) is not None  # handler restored, process alive


def test_missing_perceptual_weights_stop_before_anything(dataset, pm_mod, tmp_path, monkeypatch):
    from headpuppet.training import meta_train

    monkeypatch.setenv("HEADPUPPET_WEIGHTS", str(tmp_path / "no-weights"))
    cfg = tiny_config()
    cfg.loss.perceptual = {"vgg19": 1e-2}
    with pytest.raises(WeightsMissingError) as err:
        meta_train(cfg, dataset, out_root=tmp_path / "runs", pm=pm_mod, device="cpu")
    msg = str(err.value)
    assert "\n" not in msg and "headpuppet weights" in msg
    assert not (tmp_path / "runs").exists()  # stopped at start-up, no run folder


def test_loss_goes_down_on_real_faces(dataset, pm_mod):
    """~30 seeded steps on the astronaut episodes lower the reconstruction (content) term."""
    from headpuppet.data.episodes import collate
    from headpuppet.training.losses import ContentLoss
    from headpuppet.training.steps import discriminator_step, generator_step

    cfg = tiny_config()
    cfg.train.lr_g, cfg.train.lr_d = 1e-3, 1e-3
    nets, ds, _ = _nets_and_batch(dataset, pm_mod, cfg)
    opt_g = torch.optim.Adam(list(nets.embedder.parameters()) + list(nets.generator.parameters()),
                             lr=cfg.train.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(nets.discriminator.parameters(), lr=cfg.train.lr_d, betas=(0.5, 0.999))
    content = ContentLoss(pm_mod, cfg.loss)
    curve = []
    for step in range(30):
        batch = collate([ds[(step, v % len(ds), 0)] for v in (step, step + 1)])
        discriminator_step(nets, batch, opt_d, cfg)
        curve.append(generator_step(nets, batch, opt_g, content, cfg)["Loss/G/laplacian-pyramid"])
    first, last = np.mean(curve[:5]), np.mean(curve[-5:])
    assert last < 0.8 * first, curve


# --------------------------------------------------------------------------------------------- CLI

def test_cli_meta_train_two_steps(dataset, pm_mod, tmp_path):
    from typer.testing import CliRunner

    from headpuppet.cli import build_app

    cfg_file = tmp_path / "tiny.yaml"
    from headpuppet.config import save_config

    save_config(tiny_config(), cfg_file)
    out = tmp_path / "runs"
    result = CliRunner().invoke(build_app(pm_mod), [
        "meta-train", str(dataset), "--config", str(cfg_file), "--steps", "2", "--out", str(out),
        "--device", "cpu", "--set", "train.sample_every=2", "--batch-size", "2", "--k-shots", "2"])
    text = strip_ansi(result.output)
    assert result.exit_code == 0, text
    run = out / "00000-tiny-k2"
    assert f"run folder: {run}" in text
    assert (run / "samples" / "step-0000002.png").exists()
    assert (run / "checkpoints" / "step-0000002" / "generator.safetensors").exists()
    saved = load_config(run / "config.yaml")
    assert saved.train.steps == 2 and saved.train.sample_every == 2

    # resume continues the same folder; a bad key is one line
    result = CliRunner().invoke(build_app(pm_mod), ["meta-train", str(dataset), "--resume", str(run),
                                                    "--steps", "3", "--device", "cpu"])
    assert result.exit_code == 0, strip_ansi(result.output)
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-0000003"
    result = CliRunner().invoke(build_app(pm_mod), ["meta-train", str(dataset), "--preset", "small-128",
                                                    "--set", "train.nope=1", "--out", str(out)])
    text = strip_ansi(result.output)
    assert result.exit_code == 1 and "unknown config key 'train.nope'" in text
    assert "Traceback" not in text


def test_bf16_autocast_channels_last_and_loader_workers(dataset, pm_mod, tmp_path):
    """The GPU options run on CPU too (autocast to bf16 on CPU), and DataLoader workers give the
    same episodes as the main process (episodes are a function of their key)."""
    from headpuppet.training import meta_train

    cfg = tiny_config(steps=2, amp="bf16", channels_last=True, num_workers=1)
    run = meta_train(cfg, dataset, out_root=tmp_path, pm=pm_mod, device="cpu")
    stats = [json.loads(x) for x in (run / "stats.jsonl").read_text().splitlines()]
    assert len(stats) == 2 and all(np.isfinite(v) for r in stats for v in r.values() if isinstance(v, float))
    from headpuppet.training.checkpoint import load_checkpoint

    c = load_checkpoint(run, pm=pm_mod)
    assert c.step == 2 and c.cfg.train.amp == "bf16"
    assert all(p.dtype == torch.float32 for p in c.generator.parameters())


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_trains_in_bf16_channels_last_only_where_bf16_is_native(dataset, pm_mod, tmp_path, monkeypatch,
                                                                        native):
    """train.amp / channels_last "auto" (the shipped warp-128 preset's): bf16 autocast and channels-last
    where the device computes bf16 natively, fp32 and the default format elsewhere; said once, and the
    run folder keeps "auto" (a resumed run decides again on its own machine)."""
    from headpuppet.errors import ConfigError
    from headpuppet.progress import Reporter
    from headpuppet.training import loop, meta_train, steps

    monkeypatch.setattr(steps, "native_bf16", lambda device: native)
    formats, casts, infos = [], [], []
    real_step = loop.train_step

    def spy(nets, batch, *a, autocast=None, **kw):
        formats.append(batch["target"].is_contiguous(memory_format=torch.channels_last))
        with autocast():
            casts.append(torch.is_autocast_enabled("cpu"))
        return real_step(nets, batch, *a, autocast=autocast, **kw)

    class Infos(Reporter):
        def info(self, message):
            infos.append(message)

    monkeypatch.setattr(loop, "train_step", spy)
    run = meta_train(tiny_config(steps=1, amp="auto", channels_last="auto", num_workers=0), dataset,
                     out_root=tmp_path, pm=pm_mod, device="cpu", reporter=Infos())
    assert formats == [native] and casts == [native]
    assert [m for m in infos if "train.amp auto" in m] == [
        f"train.amp auto, channels_last auto: training in {'bf16 autocast, channels-last' if native else 'fp32'} on cpu"]
    assert "amp: auto" in (run / "config.yaml").read_text()
    assert steps.resolve_amp("bf16", "auto", "cpu") == ("bf16", True)
    assert steps.resolve_amp("none", True, "cpu") == ("none", True)
    with pytest.raises(ConfigError, match="train.channels_last"):
        tiny_config(channels_last="sometimes")
    with pytest.raises(ConfigError, match="train.amp"):
        tiny_config(amp="fp16")
    assert load_config("warp-128").train.amp == "auto"  # the shipped preset


def test_ema_warms_up_so_short_runs_do_not_keep_the_random_init(dataset, pm_mod, tmp_path):
    """With a fixed decay of 0.999, 6 steps would leave the EMA 99.4% at G's random init; the
    warm-up makes it follow G closely early on."""
    from headpuppet.models import build_networks
    from headpuppet.training import meta_train

    cfg = tiny_config(steps=6, ema=0.999, sample_every=100, checkpoint_every=100)
    run = meta_train(cfg, dataset, out_root=tmp_path, pm=pm_mod, device="cpu")
    state = _state(run)
    torch.manual_seed(cfg.train.seed)
    init = build_networks(cfg, 3, pm_mod).generator.state_dict()
    d_init = d_raw = 0.0
    for k, v in init.items():
        if not v.is_floating_point() or k.endswith(("_u", "_v")):
            continue
        ema, raw = state[f"generator_ema.{k}"], state[f"generator.{k}"]
        d_init += (ema - v).abs().sum().item()
        d_raw += (ema - raw).abs().sum().item()
    assert d_raw < d_init / 3, (d_raw, d_init)


def test_embedder_stays_alive_under_the_matching_loss(dataset, pm_mod):
    """L_MCH pulls each e_i towards W_i. With W initialised far below e's scale (N(0, 0.02)) the pull
    is downwards on every positive e until E's final ReLU dies (e == 0 for every input) and G learns
    to ignore identity, as a demo run did by step 750. W on e's scale gives an equilibrium at e = W.
    The adversarial terms are off so the test isolates the matching loss."""
    from headpuppet.data.episodes import EpisodeDataset, collate
    from headpuppet.data.format import open_dataset
    from headpuppet.training import meta_train
    from headpuppet.training.checkpoint import load_checkpoint

    cfg = tiny_config(steps=40, sample_every=0, checkpoint_every=0)
    cfg.train.lr_g = 1e-3
    cfg.loss.adv, cfg.loss.fm = 0.0, 0.0
    run = meta_train(cfg, dataset, out_root=Path(tempfile.mkdtemp()), pm=pm_mod, device="cpu")
    ck = load_checkpoint(run, pm=pm_mod)
    ds = EpisodeDataset(open_dataset(dataset), k_shots=2, seed=0)
    batch = collate([ds[0], ds[1], ds[2]])
    with torch.no_grad():
        e, _ = ck.embedder.eval()(batch["shots"], batch["shot_landmarks"])  # (3, N)
    assert (e > 0).any(dim=1).all(), "a video's embedding is all zero: the embedder's ReLU died"
    assert (e[0] - e[1]).abs().mean() > 1e-4 and (e[1] - e[2]).abs().mean() > 1e-4


def test_resume_may_change_the_loss_and_records_it(dataset, pm_mod, tmp_path):
    """A curriculum: a run resumed with other loss weights continues, says so, and keeps the record."""
    import json

    from headpuppet.config import load_config
    from headpuppet.training import meta_train

    run = meta_train(tiny_config(steps=1), dataset, out_root=tmp_path, pm=pm_mod, device="cpu")
    more = tiny_config(steps=2)
    more.loss.perceptual = {"laplacian-pyramid": 2.0}
    more.loss.fm = 0.0
    more.train.warp_source = "random"
    meta_train(more, dataset, out_root=tmp_path, pm=pm_mod, device="cpu", resume=run)
    rec = [json.loads(x) for x in (run / "changes.jsonl").read_text().splitlines()]
    assert rec == [{"step": 1, "changes": ["loss.fm: 10.0 -> 0.0",
                                           "loss.perceptual: {'laplacian-pyramid': 1.0} -> {'laplacian-pyramid': 2.0}",
                                           "train.warp_source: 'nearest' -> 'random'"]}]
    assert load_config(run / "config.yaml").loss.perceptual == {"laplacian-pyramid": 2.0}
    assert json.loads((run / "stats.jsonl").read_text().splitlines()[-1])["step"] == 2
