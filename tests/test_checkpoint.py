"""Checkpoints (headpuppet.training.checkpoint): save -> load round trips, run-folder resolution,
atomic ``latest``, clear one-line errors, compact exports, RNG state round trip."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from headpuppet.errors import CheckpointError
from headpuppet.testing import tiny_config
from headpuppet.training import checkpoint as ck

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pm_mod():
    from headpuppet.plugins import make_plugin_manager

    return make_plugin_manager()


@pytest.fixture
def nets(pm_mod):
    from headpuppet.models import build_networks

    torch.manual_seed(1)
    n = build_networks(tiny_config(), 3, pm_mod)
    # move spectral-norm buffers and weights off their initial values so equality means something
    with torch.no_grad():
        for _, m in n.items():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.01)
    return n


def _save(root: Path, nets, step: int, ema: bool = False, keep: int = 0, state=None) -> Path:
    cfg = tiny_config()
    modules = dict(nets.items())
    if ema:
        modules["generator_ema"] = nets.generator
    meta = ck.make_meta(cfg, step, 3, detector="mediapipe", dataset=str(root.parent / "data" / "vox"))
    return ck.save_checkpoint(root / "checkpoints", step, modules, meta, state=state, keep=keep)


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)


def test_round_trip_from_run_and_checkpoint_folders(tmp_path, nets, pm_mod):
    folder = _save(tmp_path, nets, 100, ema=True, state={"step": 100})
    assert folder.name == "step-0000100"
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-0000100"
    for path in (tmp_path, folder, tmp_path / "checkpoints"):
        c = ck.load_checkpoint(path, pm=pm_mod)
        assert c.step == 100 and c.path == folder
        assert _equal(c.embedder, nets.embedder) and _equal(c.generator, nets.generator)
        assert _equal(c.discriminator, nets.discriminator) and _equal(c.generator_ema, nets.generator)
        assert c.cfg == tiny_config()
        assert c.meta["plugins"] == {"detector": "mediapipe", "discriminator": "projection",
                                     "perceptual": ["laplacian-pyramid"]}
        assert not c.generator.training
    # the safetensors files describe themselves
    from safetensors import safe_open

    with safe_open(str(folder / "generator.safetensors"), "pt") as f:
        md = f.metadata()
    assert md["format"] == ck.FORMAT and md["version"] == str(ck.VERSION) and md["step"] == "100"
    assert json.loads(md["config"])["model"]["emb_dim"] == 16
    # loaded networks compute the same thing
    c = ck.load_checkpoint(folder, pm=pm_mod)
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    e = torch.randn(1, 16)
    nets.generator.eval()
    assert torch.equal(c.generator(y, e=e), nets.generator(y, e=e))


def test_latest_moves_and_old_checkpoints_are_pruned(tmp_path, nets):
    for step in (1, 2, 3, 4):
        _save(tmp_path, nets, step, keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-0000003", "step-0000004"]
    assert (root / "latest").read_text().strip() == "step-0000004"
    assert not list(root.glob(".tmp-*")) and not list(root.glob(".latest*"))
    # re-saving an existing step replaces it whole
    _save(tmp_path, nets, 4, keep=2)
    assert ck.read_meta(tmp_path)[1]["step"] == 4


def test_a_failed_write_leaves_latest_on_the_previous_checkpoint(tmp_path, nets, monkeypatch):
    _save(tmp_path, nets, 1)

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError):
        _save(tmp_path, nets, 2, state={"step": 2})
    root = tmp_path / "checkpoints"
    assert (root / "latest").read_text().strip() == "step-0000001"
    assert not (root / "step-0000002").exists() and not list(root.glob(".tmp-*"))
    assert ck.read_meta(tmp_path)[1]["step"] == 1


def test_errors_are_one_line_checkpoint_errors(tmp_path, nets, pm_mod):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        ck.load_checkpoint(tmp_path / "nope", pm=pm_mod)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither a checkpoint folder"):
        ck.load_checkpoint(tmp_path / "empty", pm=pm_mod)

    folder = _save(tmp_path / "run", nets, 5)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps(dict(meta, version=99)))
    with pytest.raises(CheckpointError, match="version 99") as err:
        ck.load_checkpoint(folder, pm=pm_mod)
    assert "\n" not in str(err.value)
    (folder / "meta.json").write_text(json.dumps(meta))

    (folder / "discriminator.safetensors").unlink()
    with pytest.raises(CheckpointError, match="discriminator.safetensors is missing"):
        ck.load_checkpoint(folder, pm=pm_mod)

    (folder / "generator.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="unreadable"):
        ck.load_checkpoint(folder, pm=pm_mod)

    (tmp_path / "run" / "checkpoints" / "latest").write_text("step-0000077\n")
    with pytest.raises(CheckpointError, match="missing or incomplete"):
        ck.load_checkpoint(tmp_path / "run", pm=pm_mod)

    with pytest.raises(CheckpointError, match="state.pt is missing"):
        ck.load_state(folder)


def test_weights_that_do_not_fit_the_config(tmp_path, nets, pm_mod):
    folder = _save(tmp_path, nets, 1)
    meta = json.loads((folder / "meta.json").read_text())
    meta["config"]["model"]["emb_dim"] = 8
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not fit the network"):
        ck.load_checkpoint(folder, pm=pm_mod)


def test_export_fp16_compact(tmp_path, nets, pm_mod):
    _save(tmp_path / "run", nets, 7, ema=True, state={"step": 7})
    out = ck.export(tmp_path / "run", tmp_path / "demo", include_discriminator=False, pm=pm_mod)
    assert sorted(p.name for p in out.iterdir()) == ["embedder.safetensors", "generator.safetensors", "meta.json"]
    from safetensors.torch import load_file

    assert load_file(str(out / "generator.safetensors"))[next(iter(nets.generator.state_dict()))].dtype \
        in (torch.float16, torch.long, torch.int64)
    c = ck.load_checkpoint(out, pm=pm_mod)
    assert c.discriminator is None and c.generator_ema is None and c.step == 7
    assert c.meta["export"] is True
    # provenance by name, not this machine's folders: the run / checkpoints / step, the dataset's folder
    assert c.meta["exported_from"] == "run/checkpoints/step-0000007"
    assert c.meta["dataset"] == "vox"
    for k, v in nets.generator.state_dict().items():
        got = c.generator.state_dict()[k]
        assert got.dtype == v.dtype
        if v.is_floating_point():
            assert torch.allclose(got, v, atol=1e-3, rtol=1e-3), k
    with_d = ck.export(tmp_path / "run", tmp_path / "ft", dtype=torch.float32, include_discriminator=True,
                       pm=pm_mod)
    assert _equal(ck.load_checkpoint(with_d, pm=pm_mod).discriminator, nets.discriminator)


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    torch.rand(5), np.random.rand(3), random.random(), np.random.randn()
    state = ck.rng_state()
    torch.save({"rng": state}, tmp_path / "s.pt")
    want = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(3)], np.random.randn(2))
    loaded = torch.load(tmp_path / "s.pt", weights_only=True)["rng"]
    ck.set_rng_state(loaded)
    got = (torch.rand(4), np.random.rand(4), [random.random() for _ in range(3)], np.random.randn(2))
    assert torch.equal(want[0], got[0]) and np.array_equal(want[1], got[1])
    assert want[2] == got[2] and np.array_equal(want[3], got[3])
