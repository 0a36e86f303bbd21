"""``headpuppet evaluate`` end to end on a tiny dataset of real faces (baselines, a tiny random
checkpoint), the protocol's sampling, determinism, and the one-line errors for bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from headpuppet.evaluation import plan_video
from headpuppet.testing import shared_file, strip_ansi

torch.set_num_threads(1)
SIZE = 64
SHORT = "short_clip"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two real videos preprocessed at 64 px (12 frames each) and one 3-frame video."""
    from headpuppet.data.format import PendingVideo, open_dataset
    from headpuppet.plugins import make_plugin_manager, registry
    from headpuppet.data.preprocess import preprocess

    videos = [shared_file("videos/dtk_m030_happy.mp4"), shared_file("videos/dtk_w009_happy.mp4")]
    pm = make_plugin_manager()
    if registry(pm, "landmarks")["mediapipe"].unavailable:
        pytest.skip("the mediapipe detector is unavailable here")
    root = tmp_path_factory.mktemp("eval") / "ds"
    preprocess(videos, root, size=SIZE, every=4, max_frames=12, pm=pm)
    src = open_dataset(root).videos[0]
    pv = PendingVideo(root, SHORT, SIZE)
    for i in range(3):
        pv.add_frame(src.frame(i))
    pv.finish(src.landmarks[:3], None if src.iris is None else src.iris[:3],
              {"id": SHORT, "source": "test", "person": "short", "fps": 25.0, "frame_indices": [0, 1, 2],
               "crop": [0, 0, SIZE]})
    return root


@pytest.fixture
def run(pm, tmp_path, monkeypatch):
    from headpuppet.cli import build_app

    monkeypatch.setenv("HEADPUPPET_WEIGHTS", str(tmp_path / "no-weights"))  # FID/CSIM weights absent
    app = build_app(pm)

    def _run(*args):
        res = CliRunner().invoke(app, ["evaluate", *map(str, args)])
        return res.exit_code, strip_ansi(res.output), res

    return _run


def _lines(text: str) -> list[str]:
    # mediapipe/absl write their own start-up chatter to the process' stderr; keep our lines
    return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("W0000", "I0000", "INFO:", "WARNING: All"))]


def test_plan_video_keeps_targets_unseen_and_is_deterministic():
    for k in (1, 4, 8):
        shots, targets = plan_video("vid", 20, k, 6, seed=3)
        assert len(shots) == k and len(set(shots)) == k
        assert shots.max() < targets.min()  # the model never sees a target frame nor anything after it
        assert targets.min() >= 10  # targets come from the second half
        s2, t2 = plan_video("vid", 20, k, 6, seed=3)
        assert (shots == s2).all() and (targets == t2).all()
    # the same targets for every K where the video allows it, so rows compare like with like
    assert (plan_video("vid", 20, 1, 6, 0)[1] == plan_video("vid", 20, 8, 6, 0)[1]).all()
    assert plan_video("vid", 8, 8, 6, 0) is None  # fewer than K + 1 frames
    shots, targets = plan_video("vid", 9, 8, 6, 0)
    assert list(shots) == list(range(8)) and list(targets) == [8]


def test_baselines_only_end_to_end(dataset, run, tmp_path):
    out = tmp_path / "report"
    code, text, res = run("none", dataset, "--shots", "1,4", "--frames-per-video", 3, "--out", out,
                          "--metrics", "ssim,psnr,fid,landmark-error", "--seed", 0)
    assert code == 0, text + repr(res.exception)
    data = json.loads((out / "metrics.json").read_text())
    assert data["methods"] == ["copy", "warp"]
    cells = {(c["method"], c["shots"]): c for c in data["results"]}
    assert set(cells) == {("copy", 1), ("warp", 1), ("copy", 4), ("warp", 4)}
    for c in cells.values():
        assert 0 < c["metrics"]["ssim"]["value"] <= 1
        assert c["metrics"]["psnr"]["value"] > 10
        assert c["metrics"]["landmark-error"]["value"] < 0.5
    assert cells[("copy", 1)]["videos"] == 3 and cells[("copy", 4)]["videos"] == 2
    # warping by the landmark motion beats copying the source on fidelity
    for k in (1, 4):
        assert cells[("warp", k)]["metrics"]["ssim"]["value"] > cells[("copy", k)]["metrics"]["ssim"]["value"]
    # FID without weights: not computed, with the fixing command, and the others still ran
    assert data["metrics"]["fid"]["computed"] is False
    assert "headpuppet weights" in data["metrics"]["fid"]["reason"]
    assert "fid" not in cells[("copy", 1)]["metrics"]
    assert "headpuppet weights" in text
    # the 3-frame video cannot give K=4 shots + 1 target: counted, never silently dropped
    assert data["skipped_count"] == {"4": 1}
    assert data["skipped"] == [{"video": SHORT, "shots": 4, "reason": "3 frames, fewer than K + 1 = 5"}]
    assert SHORT in text and "skipped" in text
    md = (out / "report.md").read_text()
    assert "| Method (T) | FID ↓ | SSIM ↑ | LMK-err ↓ | PSNR ↑ | frames |" in md
    assert "| warp (4) |" in md and "skipped (video shorter than K + 1 frames): K=4: 1" in md
    from PIL import Image

    for name in ("examples-k1.png", "examples-k4.png", "metrics-vs-shots.png"):
        with Image.open(out / name) as im:
            assert im.width > 300 and im.height > 150
        assert f"({name})" in md


def test_same_seed_gives_identical_metrics_json(dataset, run, tmp_path):
    args = ["none", dataset, "--shots", "2", "--frames-per-video", 2, "--metrics", "ssim,psnr", "--seed", 7]
    assert run(*args, "--out", tmp_path / "a")[0] == 0
    assert run(*args, "--out", tmp_path / "b")[0] == 0
    a, b = (tmp_path / "a" / "metrics.json").read_bytes(), (tmp_path / "b" / "metrics.json").read_bytes()
    assert a == b


def test_empty_dataset_is_one_line_error(run, tmp_path):
    from headpuppet.data.format import write_dataset_json

    write_dataset_json(tmp_path / "empty", SIZE, "mediapipe", False)
    code, text, _ = run("none", tmp_path / "empty", "--out", tmp_path / "r")
    lines = _lines(text)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error:") and "no complete videos" in lines[0]
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_mode_needs_a_checkpoint(dataset, run, tmp_path):
    code, text, _ = run("none", dataset, "--mode", "ff", "--out", tmp_path / "r")
    assert code == 1 and _lines(text) == [l for l in _lines(text) if l.startswith("error:")]
    assert "--mode needs a checkpoint" in text


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny random meta-train checkpoint at 64 px (weight-free perceptual loss for fine-tuning)."""
    from headpuppet.config import Config, ModelConfig
    from headpuppet.models import build_networks
    from headpuppet.plugins import make_plugin_manager
    from headpuppet.training.checkpoint import make_meta, save_checkpoint

    cfg = Config(preset="tiny-test")
    cfg.model = ModelConfig(image_size=SIZE, ch=8, max_ch=32, emb_dim=16, gen_bottleneck=16, gen_res_blocks=1,
                            attention_down=[16], attention_up=[32])
    cfg.loss.perceptual = {"laplacian-pyramid": 1.0}
    cfg.finetune.batch_size = 2
    torch.manual_seed(0)
    nets = build_networks(cfg, 3, make_plugin_manager())
    root = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    return save_checkpoint(root, 10, {"embedder": nets.embedder, "generator": nets.generator,
                                      "discriminator": nets.discriminator}, make_meta(cfg, 10, 3, detector="mediapipe"))


def test_checkpoint_ff_and_ft_end_to_end(dataset, checkpoint, run, tmp_path):
    out = tmp_path / "r"
    code, text, res = run(checkpoint, dataset, "--shots", "2", "--mode", "ff,ft", "--baseline", "copy",
                          "--finetune-steps", 1, "--frames-per-video", 2, "--max-videos", 2,
                          "--metrics", "ssim,psnr", "--out", out)
    assert code == 0, text + repr(res.exception)
    data = json.loads((out / "metrics.json").read_text())
    assert data["methods"] == ["copy", "FF", "FT"]
    assert data["checkpoint"]["step"] == 10
    rows = {c["method"]: c for c in data["results"]}
    assert rows["FF"]["frames"] == rows["FT"]["frames"] == 4
    for m in ("FF", "FT"):
        assert np.isfinite(rows[m]["metrics"]["ssim"]["value"])
    md = (out / "report.md").read_text()
    assert "| FF (2) |" in md and "| FT (2) |" in md
    assert "FT (2)" in text


def test_checkpoint_of_another_version_is_one_line_error(dataset, checkpoint, run, tmp_path):
    other = tmp_path / "old"
    shutil.copytree(checkpoint, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["version"] = 99
    (other / "meta.json").write_text(json.dumps(meta))
    code, text, _ = run(other, dataset, "--out", tmp_path / "r")
    lines = _lines(text)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith("error:") and "version 99" in lines[0]


def test_a_dataset_of_another_crop_size_is_resized_to_the_model(dataset, run, tmp_path):
    """A 64 px dataset evaluates a 32 px warp-guided model: frames and landmarks are resized, once said."""
    from headpuppet.config import Config, ModelConfig
    from headpuppet.data.format import open_dataset
    from headpuppet.models import build_networks
    from headpuppet.plugins import make_plugin_manager
    from headpuppet.training.checkpoint import make_meta, save_checkpoint

    cfg = Config(preset="tiny-warp")
    cfg.model = ModelConfig(image_size=32, ch=8, max_ch=16, emb_dim=16, gen_bottleneck=8, gen_res_blocks=1,
                            attention_down=[16], attention_up=[16], generator="warp", projection_sn=False)
    cfg.loss.perceptual = {"laplacian-pyramid": 1.0}
    torch.manual_seed(0)
    nets = build_networks(cfg, 3, make_plugin_manager())
    ckpt = save_checkpoint(tmp_path / "checkpoints", 5, dict(nets.items()), make_meta(cfg, 5, 3, detector="mediapipe"))
    small = open_dataset(dataset).resized(32)
    v, orig = small.videos[0], open_dataset(dataset).videos[0]
    assert v.frame(0).shape == (32, 32, 3) and v.num_frames == orig.num_frames and v.id == orig.id
    np.testing.assert_allclose(v.landmarks, orig.landmarks * 0.5, rtol=1e-6)
    out = tmp_path / "r"
    code, text, res = run(ckpt, dataset, "--shots", "2", "--mode", "ff", "--frames-per-video", 2,
                          "--max-videos", 1, "--metrics", "ssim", "--baseline", "none", "--out", out)
    assert code == 0, text + repr(res.exception)
    assert text.count("resizing them to the model's 32 px") == 1
    rows = json.loads((out / "metrics.json").read_text())["results"]
    assert rows[0]["frames"] == 2 and np.isfinite(rows[0]["metrics"]["ssim"]["value"])


class _MeanAbsError:
    """A third party's metric written as the plugin guide shows (columns from the registration)."""

    @staticmethod
    def plugin():
        from headpuppet import hookimpl
        from headpuppet.errors import WeightsMissingError
        from headpuppet.evaluation import PairedMetric

        class MeanAbsError(PairedMetric):
            name, label, higher_is_better, decimals = "mae", "MAE", False, 2

            def scores(self, batch):
                return np.abs(batch.fake.astype(np.float64) - batch.real).mean(axis=(1, 2, 3))

        class NeedsWeights:  # a class as its own factory: the column from its attributes
            label, higher_is_better, decimals = "Heavy", True, 4

            def __init__(self, weights_dir=None, device="cpu"):
                raise WeightsMissingError("heavy needs weights; run `headpuppet weights download heavy`")

        class Plugin:
            @hookimpl
            def register_metrics(self, register):
                register("mae", lambda weights_dir=None, device="cpu": MeanAbsError(), label="MAE",
                         higher_is_better=False, decimals=2)
                register("heavy", NeedsWeights)

        return Plugin()


def test_python_api_gives_the_cli_table_and_third_party_columns(dataset, run, tmp_path, monkeypatch):
    """`headpuppet.evaluate` is what the CLI runs: the same metrics.json byte for byte; a third
    party's metric gets its header, arrow and decimals from its registration."""
    import headpuppet
    from headpuppet.evaluation.report import table
    from headpuppet.plugins import make_plugin_manager

    monkeypatch.setenv("HEADPUPPET_WEIGHTS", str(tmp_path / "no-weights"))
    args = dict(shots=[2], frames_per_video=2, metrics=["ssim", "psnr"], seed=7)
    res = headpuppet.evaluate(None, dataset, out=tmp_path / "api", **args)
    assert sorted(res.files) == ["examples-k2.png", "metrics-vs-shots.png", "metrics.json", "report.md"]
    assert res.methods == ["copy", "warp"] and {c.shots for c in res.cells} == {2}
    assert run("none", dataset, "--shots", "2", "--frames-per-video", 2, "--metrics", "ssim,psnr", "--seed", 7,
               "--out", tmp_path / "cli")[0] == 0
    assert (tmp_path / "api" / "metrics.json").read_bytes() == (tmp_path / "cli" / "metrics.json").read_bytes()

    pm = make_plugin_manager(extra_plugins=[("mae-plugin", _MeanAbsError.plugin())])
    res = headpuppet.evaluate(None, dataset, shots=[1], baselines=["copy"], max_videos=1, frames_per_video=2,
                              metrics=["mae", "heavy"], pm=pm)
    assert res.files == {}
    headers, rows = table(res)
    assert headers == ["Method (T)", "MAE ↓", "Heavy ↑", "frames"]
    assert rows[0][1].count(".") == 1 and len(rows[0][1].split(".")[1]) == 2 and rows[0][2] == "n/c"
    assert "headpuppet weights download heavy" in res.metrics["heavy"].reason
