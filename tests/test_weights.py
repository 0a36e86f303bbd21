"""Weights manager and converters: files written here in the published formats (random weights,
the published key names and shapes), imported, loaded and compared with the originals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from headpuppet import hookimpl
from headpuppet.errors import WeightsMissingError
from headpuppet.nets.vgg import VGG16_CFG, VGG19_CFG, VGG_FACE_DAG_CONVS, VGG19, VGGFace
from headpuppet.protocols import WeightSpec
from headpuppet import weights as W
from headpuppet.testing import strip_ansi

ROOT = Path(__file__).resolve().parents[1]
# conv positions in torchvision's vgg19 `features` (written out independently of the code under test)
TV_VGG19_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


def _conv_shapes(cfg):
    """(out, in, 3, 3) of each conv of a VGG configuration, in order."""
    shapes, c_in = [], 3
    for v in cfg:
        if v != "M":
            shapes.append((v, c_in, 3, 3))
            c_in = v
    return shapes


def _random_conv(shape, gen):
    fan_in = shape[1] * 9
    return torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5, torch.randn(shape[0], generator=gen) * 0.1


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """A torchvision-format vgg19 .pth and a pytorch-mcn vgg_face_dag .pth with random weights."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    root = tmp_path_factory.mktemp("orig")
    tv: dict[str, torch.Tensor] = {}
    for i, shape in zip(TV_VGG19_CONVS, _conv_shapes(VGG19_CFG)):
        tv[f"features.{i}.weight"], tv[f"features.{i}.bias"] = _random_conv(shape, gen)
    # The published classifier is (4096, 25088), (4096, 4096), (1000, 4096): ~0.5 GB. The converter
    # drops classifier.* whatever its shapes, so small stand-ins keep the file quick to write.
    for i, shape in ((0, (8, 16)), (3, (8, 8)), (6, (10, 8))):
        tv[f"classifier.{i}.weight"], tv[f"classifier.{i}.bias"] = torch.randn(shape), torch.randn(shape[0])
    tv_path = root / "vgg19-dcbb9e9d.pth"
    torch.save(tv, tv_path)

    dag: dict[str, torch.Tensor] = {}
    for name, shape in zip(VGG_FACE_DAG_CONVS, _conv_shapes(VGG16_CFG)):
        dag[f"{name}.weight"], dag[f"{name}.bias"] = _random_conv(shape, gen)
    for name, shape in (("fc6", (8, 16)), ("fc7", (8, 8)), ("fc8", (26, 8))):  # published: 4096x25088, ..., 2622x4096
        dag[f"{name}.weight"], dag[f"{name}.bias"] = torch.randn(shape), torch.randn(shape[0])
    dag_path = root / "vgg_face_dag.pth"
    torch.save(dag, dag_path)
    return {"vgg19": (tv_path, tv), "vggface": (dag_path, dag)}


def _spec(pm, name, path):
    """The registered spec with its hash replaced by the test file's (the real one is the published file's)."""
    return dataclasses.replace(W.get_spec(pm, name), source_sha256=W.sha256_file(path))


def _reference_relus(x, convs, cfg):
    """Independent VGG forward from an ordered list of (weight, bias): every ReLU output, by conv order."""
    outs, it = [], iter(convs)
    h = x
    for v in cfg:
        if v == "M":
            h = F.max_pool2d(h, 2)
        else:
            w, b = next(it)
            h = F.relu(F.conv2d(h, w, b, padding=1))
            outs.append(h)
    return outs


@pytest.fixture(scope="module")
def imported(originals, tmp_path_factory):
    from headpuppet.plugins import make_plugin_manager

    pm = make_plugin_manager()
    dest = tmp_path_factory.mktemp("weights")
    for name, (path, _) in originals.items():
        W.import_file(_spec(pm, name, path), path, dest)
    return dest


def test_vgg19_import_roundtrip_exact(originals, imported):
    path, orig = originals["vgg19"]
    state = W.load_weights("vgg19", dest=imported)
    feats = {k: v for k, v in orig.items() if k.startswith("features.")}
    assert set(state) == set(feats)  # torchvision keys carry over 1:1, classifier dropped
    for k, v in feats.items():
        assert torch.equal(state[k], v), k
    meta = W.read_metadata("vgg19", imported)
    assert meta["source_sha256"] == W.sha256_file(path)
    assert meta["source"] == "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
    assert meta["format"] == "headpuppet-weights"


def test_vgg19_features_match_original_dict_and_reference(originals, imported):
    torch.manual_seed(0)
    _, orig = originals["vgg19"]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    direct = VGG19().load_trunk({k: v for k, v in orig.items() if k.startswith("features.")})
    converted = VGG19().load_trunk(W.load_weights("vgg19", dest=imported))
    a, b = direct(x), converted(x)
    assert [t.shape[1] for t in a] == [64, 128, 256, 512, 512]
    for ta, tb in zip(a, b):
        assert torch.equal(ta, tb)
    # paper layers 1, 6, 11, 20, 29 are relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (conv 0, 2, 4, 8, 12)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    convs = [(orig[f"features.{i}.weight"], orig[f"features.{i}.bias"])
             for i in TV_VGG19_CONVS]
    ref = _reference_relus(((x + 1) / 2 - mean) / std, convs, VGG19_CFG)
    for got, want in zip(a, [ref[i] for i in (0, 2, 4, 8, 12)]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_vggface_import_maps_dag_names_and_features_match(originals, imported):
    torch.manual_seed(1)
    _, dag = originals["vggface"]
    state = W.load_weights("vggface", dest=imported)
    assert torch.equal(state["features.0.weight"], dag["conv1_1.weight"])
    assert torch.equal(state["features.17.bias"], dag["conv4_1.bias"])
    assert torch.equal(state["features.28.weight"], dag["conv5_3.weight"])
    assert len(state) == 26  # 13 convs, fc6-8 dropped
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    net = VGGFace().load_trunk(state)
    got = net(x)
    # reference: the vgg_face_dag forward by name, on RGB [0, 255] minus the pytorch-mcn meta mean
    mean = torch.tensor([129.186279296875, 104.76238250732422, 93.59396362304688]).view(1, 3, 1, 1)
    convs = [(dag[f"{n}.weight"], dag[f"{n}.bias"]) for n in VGG_FACE_DAG_CONVS]
    ref = _reference_relus((x + 1) * 127.5 - mean, convs, VGG16_CFG)
    # paper layers 1, 6, 11, 18, 25 = relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (conv 0, 2, 4, 7, 10)
    for g, want in zip(got, [ref[i] for i in (0, 2, 4, 7, 10)]):
        torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-3)
    # Caffe-style weights (first conv taking B, G, R) with bgr=True give the same activations
    caffe_state = dict(state, **{"features.0.weight": state["features.0.weight"].flip(1)})
    for g, c in zip(got, VGGFace(bgr=True).load_trunk(caffe_state)(x)):
        torch.testing.assert_close(g, c, rtol=1e-4, atol=1e-3)


def test_sha256_mismatch_rejected_nothing_written(originals, pm, tmp_path):
    path, _ = originals["vgg19"]
    spec = W.get_spec(pm, "vgg19")  # the real spec: prefix dcbb9e9d of the published file
    with pytest.raises(W.WeightsChecksumError) as err:
        W.import_file(spec, path, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "dcbb9e9d" in msg and W.sha256_file(path) in msg and "prefix" in msg
    assert list(tmp_path.iterdir()) == []
    full = dataclasses.replace(spec, source_sha256="0" * 64)
    with pytest.raises(W.WeightsChecksumError, match="expected sha256 0{64}"):
        W.import_file(full, path, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_sha256_prefix_accepted(originals, pm, tmp_path):
    path, _ = originals["vgg19"]
    spec = dataclasses.replace(W.get_spec(pm, "vgg19"), source_sha256=W.sha256_file(path)[:8])
    assert W.sha256_kind(spec) == "prefix"
    assert W.import_file(spec, path, tmp_path) == tmp_path / "vgg19.safetensors"


def test_unknown_sha256_warns_and_records(originals, pm, tmp_path):
    path, _ = originals["vggface"]
    spec = W.get_spec(pm, "vggface")
    assert spec.source_sha256 is None and W.sha256_kind(spec) == "unknown"
    warnings: list[str] = []
    W.import_file(spec, path, tmp_path, warn=warnings.append)
    assert len(warnings) == 1 and "not verified" in warnings[0]
    assert W.read_metadata("vggface", tmp_path)["source_sha256"] == W.sha256_file(path)


def test_wrong_format_is_one_line_error(originals, pm, tmp_path):
    dag_path, _ = originals["vggface"]
    spec = dataclasses.replace(W.get_spec(pm, "vgg19"), source_sha256=None)
    with pytest.raises(W.WeightsFormatError, match="features.0.weight is missing"):
        W.import_file(spec, dag_path, tmp_path, warn=lambda m: None)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(W.WeightsFormatError, match="not a PyTorch state dict"):
        W.import_file(spec, junk, tmp_path, warn=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pth"]


def test_download_file_url_checks_sha256(originals, pm, tmp_path):
    path, orig = originals["vgg19"]
    seen: list[tuple[int, int | None]] = []
    out = W.download(_spec(pm, "vgg19", path), tmp_path, url=path.as_uri(), progress=lambda d, t: seen.append((d, t)))
    assert out == tmp_path / "vgg19.safetensors"
    assert seen[-1] == (path.stat().st_size, path.stat().st_size)
    assert torch.equal(W.load_weights("vgg19", dest=tmp_path)["features.34.weight"], orig["features.34.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vgg19.safetensors"]  # no temp file left
    bad = tmp_path / "bad"
    with pytest.raises(W.WeightsChecksumError):
        W.download(W.get_spec(pm, "vgg19"), bad, url=path.as_uri())
    assert list(bad.iterdir()) == []


def test_download_failure_says_import_by_hand(pm, tmp_path):
    missing = (tmp_path / "nope.pth").as_uri()
    with pytest.raises(W.WeightsDownloadError) as err:
        W.download(W.get_spec(pm, "vggface"), tmp_path / "w", url=missing)
    msg = str(err.value)
    assert "\n" not in msg and "headpuppet weights import vggface FILE" in msg
    assert list((tmp_path / "w").iterdir()) == []


def test_missing_weights_error_names_commands(tmp_path, monkeypatch):
    monkeypatch.setenv(W.ENV, str(tmp_path))
    assert W.weights_dir() == tmp_path
    with pytest.raises(WeightsMissingError) as err:
        W.require("vgg19", title="VGG19")
    assert str(err.value).startswith(
        "VGG19 weights (vgg19) are missing: run `headpuppet weights download vgg19` or "
        "`headpuppet weights import vgg19 FILE`")
    with pytest.raises(WeightsMissingError, match="headpuppet weights download vggface"):
        W.load_weights("vggface")


def test_status_and_env_dir(originals, imported, pm, monkeypatch):
    monkeypatch.setenv(W.ENV, str(imported))
    rows = {r.name: r for r in W.status(pm)}
    assert rows["vgg19"].present and rows["vggface"].present
    assert rows["vgg19"].size == (imported / "vgg19.safetensors").stat().st_size
    assert rows["vggface"].licence and rows["vggface"].source.endswith("vgg_face_dag.pth")


def test_manifest_file_agrees_with_registered_specs(pm):
    on_disk = json.loads((ROOT / "weights" / "manifest.json").read_text())
    assert on_disk == W.manifest(pm), ("weights/manifest.json is out of date; regenerate it with "
                                       "`python -m headpuppet.weights weights/manifest.json`")
    entries = on_disk["weights"]
    assert entries["vgg19"]["sha256"] == "dcbb9e9d" and entries["vgg19"]["sha256_kind"] == "prefix"
    assert entries["vggface"]["sha256"] is None and "not verified" in entries["vggface"]["sha256_note"]


# --- the CLI, with a small fake spec from a test plugin (the manager is generic) ---

def _tiny_converter(path):
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {"w": state["weight"] * 2}


def _tiny_pm(tmp_path):
    from headpuppet.plugins import make_plugin_manager

    original = tmp_path / "tiny.pth"
    torch.save({"weight": torch.arange(6.0).view(2, 3)}, original)

    class TinyPlugin:
        @hookimpl
        def register_weights(self, register):
            register(WeightSpec(name="tiny", description="a test file", source=original.as_uri(),
                                source_sha256=W.sha256_file(original), licence="CC0", converter=_tiny_converter,
                                filename="tiny.pth", extra={"title": "Tiny"}))

    return make_plugin_manager(extra_plugins=[("tiny-plugin", TinyPlugin())]), original


def test_cli_list_import_download(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from headpuppet.cli import build_app

    pm, original = _tiny_pm(tmp_path)
    monkeypatch.setenv(W.ENV, str(tmp_path / "w"))
    app, runner = build_app(pm), CliRunner()
    res = runner.invoke(app, ["weights", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert {"vgg19", "vggface", "tiny"} <= set(rows)
    assert rows["tiny"]["present"] is False and rows["vgg19"]["licence"]

    res = runner.invoke(app, ["weights", "import", "tiny", str(original)])
    assert res.exit_code == 0, strip_ansi(res.output)
    assert torch.equal(W.load_weights("tiny")["w"], torch.arange(6.0).view(2, 3) * 2)
    res = runner.invoke(app, ["weights", "list", "--json"])
    assert {r["name"]: r for r in json.loads(res.stdout)}["tiny"]["present"] is True
    res = runner.invoke(app, ["weights", "list"])
    assert res.exit_code == 0 and "present" in strip_ansi(res.output)

    (tmp_path / "w" / "tiny.safetensors").unlink()
    res = runner.invoke(app, ["weights", "download", "tiny"])  # the spec's source is a file:// URL
    assert res.exit_code == 0, strip_ansi(res.output)
    assert (tmp_path / "w" / "tiny.safetensors").is_file()

    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2, 3)}, other)
    res = runner.invoke(app, ["weights", "import", "tiny", str(other)])
    out = strip_ansi(res.output)
    assert res.exit_code == 1 and "error:" in out and "expected sha256" in out
    assert "Traceback" not in out
    res = runner.invoke(app, ["weights", "download", "nonesuch"])
    assert res.exit_code == 1 and "unknown weights 'nonesuch'" in strip_ansi(res.output)


def test_download_of_a_page_only_source_says_to_import_by_hand(tmp_path):
    from headpuppet.plugins import make_plugin_manager

    spec = W.get_spec(make_plugin_manager(), "arcface-r100")
    with pytest.raises(W.WeightsDownloadError, match="no direct download.*headpuppet weights import arcface-r100 FILE"):
        W.download(spec, dest=tmp_path)
    assert not list(tmp_path.iterdir())


def test_missing_manual_weights_name_only_the_import_command(tmp_path):
    with pytest.raises(WeightsMissingError) as err:
        W.require("arcface-r100", dest=tmp_path, manual=True)
    msg = str(err.value)
    assert "headpuppet weights import arcface-r100 FILE" in msg and "download" not in msg
