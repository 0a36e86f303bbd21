"""Tests a plugin author would write: the hook registers the detector, headpuppet finds it by name,
the CLI lists it, and it finds the face in a real photo."""

import json

import numpy as np
import pytest
from skimage import data
from typer.testing import CliRunner

import headpuppet_example_detector as plugin
from headpuppet.cli import build_app
from headpuppet.plugins import make_plugin_manager, registry


@pytest.fixture
def pm():
    # Only this plugin: fast and independent of whatever else is installed.
    return make_plugin_manager(load_entrypoints=False, extra_plugins=[("example", plugin)])


def test_detects_the_astronaut(pm):
    detector = registry(pm, "landmarks").create("example")
    faces = detector.detect(data.astronaut())
    assert len(faces) == 1
    points = faces[0].points
    assert points.shape == (68, 2)
    # the astronaut's face is around x 170-280, y 60-180 in this 512 x 512 photo
    assert 170 < points[:, 0].mean() < 280 and 60 < points[:, 1].mean() < 180
    assert points[36, 0] < points[45, 0]  # right eye on the image's left


def test_no_face_in_a_flat_image(pm):
    assert registry(pm, "landmarks").create("example").detect(np.full((240, 320, 3), 128, np.uint8)) == []


def test_listed_by_the_cli(pm):
    result = CliRunner().invoke(build_app(pm), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = [r for r in json.loads(result.output) if r["name"] == "example"]
    assert rows and rows[0]["kind"] == "landmarks" and rows[0]["available"]
