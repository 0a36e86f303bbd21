"""The plugin manager: built-in, third-party (entry points and direct), broken, duplicate, blocked."""

from __future__ import annotations

import json
import types

import pytest
from typer.testing import CliRunner

from headpuppet import hookimpl
from headpuppet import plugins as plugins_mod
from headpuppet.cli import build_app
from headpuppet.errors import PluginError
from headpuppet.plugins import make_plugin_manager, registry
from headpuppet.testing import strip_ansi


def _detector_plugin(name: str):
    class Dummy:
        has_iris = False

        def __init__(self, **options):
            self.name = name

        def detect(self, frame):
            return []

        def reset(self):
            pass

    mod = types.SimpleNamespace()

    @hookimpl
    def register_landmark_detectors(register):
        register(name, Dummy)

    mod.register_landmark_detectors = register_landmark_detectors
    return mod


class FakeDist:
    def __init__(self, name, version):
        self.name, self.version = name, version


class FakeEntryPoint:
    def __init__(self, name, obj, dist=None, fail=None):
        self.name, self._obj, self.dist, self._fail = name, obj, dist, fail

    def load(self):
        if self._fail:
            raise self._fail
        return self._obj


def _patch_entry_points(monkeypatch, eps):
    monkeypatch.setattr(plugins_mod, "entry_points", lambda group: [e for e in eps] if group == "headpuppet" else [])


def test_first_party_plugins_are_loaded_through_entry_points():
    pm = make_plugin_manager()
    names = {name for name, _ in pm.list_name_plugin()}
    # the first-party plugins are declared in pyproject's [project.entry-points.headpuppet]
    assert {"mediapipe", "discriminators", "perceptual"} <= names
    assert pm.info["mediapipe"].distribution == "headpuppet"


def test_third_party_entry_point_is_loaded_with_its_distribution(monkeypatch):
    _patch_entry_points(monkeypatch, [FakeEntryPoint("thirdparty", _detector_plugin("tp-det"), FakeDist("tp-pkg", "1.2.3"))])
    pm = make_plugin_manager()
    entry = registry(pm, "landmarks")["tp-det"]
    assert (entry.plugin, entry.distribution, entry.version) == ("thirdparty", "tp-pkg", "1.2.3")
    assert registry(pm, "landmarks").create("tp-det").detect(None) == []


def test_broken_plugin_is_reported_once_and_skipped(monkeypatch):
    good = FakeEntryPoint("good", _detector_plugin("good-det"), FakeDist("good", "1"))
    bad = FakeEntryPoint("bad", None, FakeDist("bad", "1"), fail=ImportError("No module named 'nowhere'"))
    _patch_entry_points(monkeypatch, [bad, good])
    pm = make_plugin_manager()
    assert [name for name, _ in pm.failures] == ["bad"]
    assert "nowhere" in pm.failures[0][1]
    assert "good-det" in registry(pm, "landmarks")
    # the CLI still works and says what was skipped
    result = CliRunner().invoke(build_app(pm), ["plugins"])
    assert result.exit_code == 0, result.output
    assert "bad" in strip_ansi(result.output)


def test_plugin_that_fails_while_registering_is_skipped():
    broken = types.SimpleNamespace()

    @hookimpl
    def register_landmark_detectors(register):
        raise RuntimeError("boom")

    broken.register_landmark_detectors = register_landmark_detectors
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[("broken", broken), ("ok", _detector_plugin("ok-det"))])
    reg = registry(pm, "landmarks")
    assert reg.names() == ["ok-det"]
    assert pm.failures and pm.failures[0][0] == "broken" and "boom" in pm.failures[0][1]


def test_duplicate_names_fail_naming_both_plugins():
    """Two third-party plugins claiming one name: that name fails when used, naming both; the
    registry itself (every other name) keeps working."""
    pm = make_plugin_manager(load_entrypoints=False,
                             extra_plugins=[("first", _detector_plugin("same")), ("second", _detector_plugin("same")),
                                            ("third", _detector_plugin("other"))])
    reg = registry(pm, "landmarks")
    with pytest.raises(PluginError) as err:
        reg.create("same")
    assert "first" in str(err.value) and "second" in str(err.value) and "'same'" in str(err.value)
    assert "other" in reg and any("same" in reason for _, reason in pm.failures)


def test_blocked_by_environment(monkeypatch):
    _patch_entry_points(monkeypatch, [FakeEntryPoint("tp", _detector_plugin("tp-det"), FakeDist("tp-pkg", "1"))])
    monkeypatch.setenv("HEADPUPPET_DISABLE_PLUGINS", "tp, other")
    pm = make_plugin_manager(extra_plugins=[("other", _detector_plugin("other-det"))])
    assert "tp-det" not in registry(pm, "landmarks")
    assert "other-det" not in registry(pm, "landmarks")
    # blocking by distribution name works too
    monkeypatch.setenv("HEADPUPPET_DISABLE_PLUGINS", "tp-pkg")
    assert "tp-det" not in registry(make_plugin_manager(), "landmarks")


def test_unknown_and_unavailable_components_fail_clearly():
    mod = types.SimpleNamespace()

    @hookimpl
    def register_landmark_detectors(register):
        register("needs-extra", object, unavailable="install it with: pip install 'x[y]'")

    mod.register_landmark_detectors = register_landmark_detectors
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[("m", mod)])
    reg = registry(pm, "landmarks")
    with pytest.raises(PluginError, match="unavailable: install it with"):
        reg.create("needs-extra")
    with pytest.raises(PluginError, match="unknown landmarks 'nope'; available: needs-extra"):
        reg.create("nope")


def test_plugins_dir_loads_python_files(tmp_path):
    (tmp_path / "mydet.py").write_text(
        "from headpuppet import hookimpl\n"
        "class D:\n    name='dir-det'; has_iris=False\n    def detect(self, f): return []\n    def reset(self): pass\n"
        "@hookimpl\ndef register_landmark_detectors(register):\n    register('dir-det', D)\n")
    (tmp_path / "broken.py").write_text("raise SyntaxError('nope')\n")
    pm = make_plugin_manager(load_entrypoints=False, plugins_dir=tmp_path)
    assert "dir-det" in registry(pm, "landmarks")
    assert [n for n, _ in pm.failures] == ["broken"]


def test_plugin_commands_appear_in_help_and_listing():
    mod = types.SimpleNamespace()

    @hookimpl
    def register_commands(app):
        @app.command("hello")
        def hello(name: str = "world"):
            """Say hello (from a plugin)."""
            print(f"hello {name}")

    mod.register_commands = register_commands
    pm = make_plugin_manager(load_entrypoints=False, extra_plugins=[("greeter", mod)])
    app = build_app(pm)
    runner = CliRunner()
    assert "hello" in strip_ansi(runner.invoke(app, ["--help"]).output)
    assert runner.invoke(app, ["hello", "--name", "you"]).output.strip() == "hello you"
    rows = json.loads(runner.invoke(app, ["plugins", "--json"]).output)
    assert any(r["name"] == "hello" and r["kind"] == "command" and r["plugin"] == "greeter" for r in rows)


def test_plugins_json_has_the_documented_keys():
    result = CliRunner().invoke(build_app(make_plugin_manager()), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows, "the first-party plugins register components"
    for row in rows:
        assert {"name", "kind", "plugin", "distribution", "version"} <= set(row)
        assert row["kind"] in {"landmarks", "perceptual", "discriminator", "command", "metric", "weights"}
