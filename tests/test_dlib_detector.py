"""The dlib landmark detector plugin package (examples/headpuppet-dlib-detector), as installed (a fake
entry point) and through --plugins-dir: listed, used by preprocess, and close to mediapipe."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from headpuppet import plugins as plugins_mod
from headpuppet.cli import build_app
from headpuppet.plugins import make_plugin_manager, registry
from headpuppet.testing import shared_file, strip_ansi

PACKAGE = Path(__file__).resolve().parents[1] / "examples" / "headpuppet-dlib-detector"

pytest.importorskip("dlib", reason="dlib is not importable (pip install dlib-bin)")


class FakeDist:
    name = "headpuppet-dlib-detector"
    version = "0.1.0"


class FakeEntryPoint:
    """What `pip install -e examples/headpuppet-dlib-detector` adds to the group "headpuppet"."""

    name, value, group, dist = "dlib", "headpuppet_dlib_detector", "headpuppet", FakeDist()

    def load(self):
        return importlib.import_module(self.value)


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.syspath_prepend(str(PACKAGE))
    real = plugins_mod.entry_points

    def entry_points(group):
        return [*real(group=group), FakeEntryPoint()] if group == "headpuppet" else real(group=group)

    monkeypatch.setattr(plugins_mod, "entry_points", entry_points)


def test_listed_by_headpuppet_plugins(installed):
    res = CliRunner().invoke(build_app(make_plugin_manager()), ["plugins", "--json"])
    assert res.exit_code == 0, strip_ansi(res.output)
    row = next(r for r in json.loads(res.stdout) if r["name"] == "dlib")
    assert row == {"name": "dlib", "kind": "landmarks", "plugin": "dlib", "distribution": "headpuppet-dlib-detector",
                   "version": "0.1.0", "available": True, "unavailable": None}


def test_preprocess_with_the_dlib_detector_agrees_with_mediapipe(tmp_path):
    from headpuppet.data.format import open_dataset
    from headpuppet.media.landmarks import landmark_error
    from headpuppet.data.preprocess import preprocess

    pm = make_plugin_manager(plugins_dir=PACKAGE)  # as `headpuppet --plugins-dir ... preprocess`
    reg = registry(pm, "landmarks")
    if reg["mediapipe"].unavailable:
        pytest.skip("mediapipe unavailable")
    video = shared_file("videos/dtk_m030_neutral.mp4")
    preprocess([video], tmp_path / "ds", size=128, every=15, max_frames=4, detector="dlib", pm=pm)
    ds = open_dataset(tmp_path / "ds")
    v = ds.videos[0]
    assert v.num_frames == 4 and v.landmarks.shape == (4, 68, 2) and v.iris is None
    mp = reg.create("mediapipe", static_image_mode=True)
    errs = []
    for i in range(v.num_frames):
        mp.reset()
        errs.append(landmark_error(mp.detect(v.frame(i))[0].points, v.landmarks[i]))
    assert np.mean(errs) < 0.08, errs  # measured ~0.03 inter-ocular distances on this video
