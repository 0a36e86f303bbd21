"""A third-party package (examples/headpuppet-example-detector) seen and used as a plugin: through a
fake installed entry point, through make_plugin_manager(extra_plugins=...) and through --plugins-dir."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from headpuppet import plugins as plugins_mod
from headpuppet.cli import build_app
from headpuppet.plugins import make_plugin_manager, registry
from headpuppet.protocols import LandmarkDetector
from headpuppet.testing import strip_ansi

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "headpuppet-example-detector"


@pytest.fixture
def example_module(monkeypatch):
    """The example package's module, importable as if `pip install -e` had been run."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    return importlib.import_module("headpuppet_example_detector")


class FakeDist:
    name = "headpuppet-example-detector"
    version = "0.1.0"


class FakeEntryPoint:
    """What `importlib.metadata.entry_points(group="headpuppet")` yields for the installed example."""

    name, value, group, dist = "example", "headpuppet_example_detector", "headpuppet", FakeDist()

    def load(self):
        return importlib.import_module(self.value)


@pytest.fixture
def installed(monkeypatch, example_module):
    real = plugins_mod.entry_points

    def entry_points(group):
        return [*real(group=group), FakeEntryPoint()] if group == "headpuppet" else real(group=group)

    monkeypatch.setattr(plugins_mod, "entry_points", entry_points)


def _rows(pm) -> list[dict]:
    result = CliRunner().invoke(build_app(pm), ["plugins", "--json"])
    assert result.exit_code == 0, strip_ansi(result.output)
    return json.loads(result.output)


def test_entry_point_listed_by_headpuppet_plugins(installed):
    rows = _rows(make_plugin_manager())
    row = next(r for r in rows if r["name"] == "example")
    assert row == {"name": "example", "kind": "landmarks", "plugin": "example",
                   "distribution": "headpuppet-example-detector", "version": "0.1.0",
                   "available": True, "unavailable": None}
    assert any(r["name"] == "mediapipe" for r in rows)  # the first-party detectors are still there


@pytest.mark.parametrize("block", ["example", "headpuppet-example-detector"])
def test_blocked_by_plugin_or_distribution_name(installed, monkeypatch, block):
    monkeypatch.setenv("HEADPUPPET_DISABLE_PLUGINS", f"something-else,{block}")
    names = {r["name"] for r in _rows(make_plugin_manager())}
    assert "example" not in names and "mediapipe" in names


def test_entry_point_detector_detects_the_astronaut(installed, astronaut):
    detector = registry(make_plugin_manager(), "landmarks").create("example")
    assert isinstance(detector, LandmarkDetector) and detector.name == "example" and not detector.has_iris
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    p = faces[0].points
    assert p.shape == (68, 2) and faces[0].iris is None
    assert 150 < p[:, 0].min() and p[:, 0].max() < 300  # on the astronaut's face
    assert p[36, 0] < p[45, 0] and p[27:31, 1].max() < p[48:68, 1].min()


def test_extra_plugins_manager(example_module, astronaut):
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[("example", example_module)])
    assert registry(pm, "landmarks").names() == ["example"]
    assert len(registry(pm, "landmarks").create("example").detect(astronaut)) == 1
    row = next(r for r in _rows(pm) if r["name"] == "example")
    assert row["kind"] == "landmarks" and row["plugin"] == "example" and row["distribution"] is None


def test_plugins_dir(astronaut):
    # the example is a single module, so --plugins-dir can load it without installing anything
    pm = make_plugin_manager(load_entrypoints=False, plugins_dir=EXAMPLE)
    entry = registry(pm, "landmarks")["example"]
    assert entry.plugin == "headpuppet_example_detector"
    assert len(entry.create().detect(astronaut)) == 1


def test_example_package_declares_the_entry_point():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert meta["project"]["entry-points"]["headpuppet"] == {"example": "headpuppet_example_detector"}
    assert (EXAMPLE / "README.md").is_file()
