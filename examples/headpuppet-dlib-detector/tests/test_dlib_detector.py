"""The plugin's own tests: registered under "dlib", finds the astronaut's face with plausible
points, nothing in a flat image, and reports itself unavailable without dlib."""

import sys

import numpy as np
import pytest
from skimage import data

import headpuppet_dlib_detector as plugin
from headpuppet.plugins import make_plugin_manager, registry

pytest.importorskip("dlib")


@pytest.fixture
def pm():
    return make_plugin_manager(load_entrypoints=False, extra_plugins=[("dlib", plugin)])


def test_detects_the_astronaut(pm):
    faces = registry(pm, "landmarks").create("dlib").detect(data.astronaut())
    assert len(faces) == 1
    p = faces[0].points
    assert p.shape == (68, 2) and p.dtype == np.float32
    assert 170 < p[:, 0].mean() < 280 and 60 < p[:, 1].mean() < 180
    assert p[36, 0] < p[45, 0] and p[30, 1] < p[57, 1]  # right eye on the image's left; nose above chin
    assert 0 < faces[0].score < 1 and faces[0].iris is None


def test_no_face_in_a_flat_image(pm):
    assert registry(pm, "landmarks").create("dlib").detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_unavailable_without_dlib(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    monkeypatch.setattr(plugin.importlib.util, "find_spec", lambda name: None)
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[("dlib", plugin)])
    assert "pip install dlib-bin" in registry(pm, "landmarks")["dlib"].unavailable
