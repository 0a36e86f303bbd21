"""The CLI shell: help lists every command, --version, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from headpuppet import __version__
from headpuppet.cli import build_app
from headpuppet.plugins import make_plugin_manager
from headpuppet.testing import strip_ansi


def test_help_lists_the_pipeline_and_management_commands():
    result = CliRunner().invoke(build_app(make_plugin_manager()), ["--help"])
    assert result.exit_code == 0
    out = strip_ansi(result.output)
    for cmd in ("preprocess", "meta-train", "fine-tune", "animate", "evaluate", "plugins", "weights"):
        assert cmd in out
    assert "Pipeline" in out


def test_every_commands_help_shows_its_bracketed_defaults():
    """A help text's "[default: ...]" must be escaped for rich ("\\[default: ..."), or rich takes it
    for markup and drops it: `evaluate --help` lost five of them that way."""
    import re
    from pathlib import Path

    app = build_app(make_plugin_manager())
    cli = Path(__file__).resolve().parents[1] / "headpuppet" / "cli"
    unescaped = [f"{p.name}:{n}" for p in sorted(cli.glob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"(?<!\\\\)\[default:", line)]
    assert unescaped == []
    out = " ".join(strip_ansi(CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "250"}).output).split())
    for text in ("[default: ff,ft]", "[default: copy, warp]", "[default: every registered one]",
                 "[default: the checkpoint's config]"):
        assert text in out


def test_version():
    result = CliRunner().invoke(build_app(make_plugin_manager()), ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"headpuppet {__version__}"


def test_console_script_and_module_entry_run():
    out = subprocess.run([sys.executable, "-m", "headpuppet", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip().startswith("headpuppet ")


def test_main_freezes_the_heap_before_the_interpreter_exits():
    """main() leaves the objects made so far out of the exit's garbage collections (gc.freeze), also
    when the command fails, and the exit status is the command's."""
    code = ("import gc, sys; from headpuppet.cli import main; sys.argv = ['headpuppet'] + sys.argv[1:]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    print(e.code, gc.get_freeze_count() > 0)")
    for args, status in ((["--version"], "0"), (["animate"], "2")):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
        assert out.stdout.strip().splitlines()[-1] == f"{status} True", out.stdout + out.stderr


def test_main_makes_mkl_reproducible_before_torch_unless_the_environment_says_otherwise():
    """main() sets MKL_CBWR=AUTO,STRICT (fine-tuning with a seed gives the same weights every run)
    before anything imports torch, leaves a value the user set alone, and leaves meta-train alone."""
    code = ("import os, sys; from headpuppet.cli import main; sys.argv = ['headpuppet', '--version']\n"
            "try:\n    main()\nexcept SystemExit:\n    print(os.environ.get('MKL_CBWR'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split()[-2:] == ["AUTO,STRICT", "False"], out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(env, MKL_CBWR="COMPATIBLE"))
    assert out.stdout.split()[-2] == "COMPATIBLE", out.stdout + out.stderr
    # meta-training keeps MKL's default (its steps were slower in the reproducible mode)
    out = subprocess.run([sys.executable, "-c", code.replace("'--version'", "'-v', 'meta-train', '--help'")],
                         capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split()[-2] == "None", out.stdout + out.stderr


def test_prescan_finds_the_command_and_the_plugins_dir_before_typer(monkeypatch):
    from headpuppet.cli import _prescan
    from headpuppet.plugins import PLUGINS_DIR_ENV

    monkeypatch.delenv(PLUGINS_DIR_ENV, raising=False)
    assert _prescan(["-v", "--plugins-dir", "extra", "animate", "a.jpg"]) == "animate"
    assert os.environ[PLUGINS_DIR_ENV] == "extra"
    assert _prescan(["meta-train", "--plugins-dir=other", "x"]) == "meta-train"
    assert os.environ[PLUGINS_DIR_ENV] == "other"
    assert _prescan(["--version"]) is None and _prescan(["--plugins-dir"]) is None
    assert os.environ[PLUGINS_DIR_ENV] == "other"


def test_the_collector_is_off_only_while_a_command_starts():
    """pause_gc_for_startup turns the garbage collector off; the first progress bar, a fork or the
    time limit turns it back on, with start-up's objects frozen."""
    code = (
        "import gc, os, time\n"
        "from headpuppet.cli._common import RichReporter, pause_gc_for_startup\n"
        "pause_gc_for_startup(60)\n"
        "off = not gc.isenabled()\n"
        "with RichReporter(disable=True).task('work'):\n"
        "    bar = gc.isenabled() and gc.get_freeze_count() > 0\n"
        "pause_gc_for_startup(0.2)\n"
        "off2 = not gc.isenabled()\n"
        "time.sleep(1.0)\n"
        "timer = gc.isenabled()\n"
        "pause_gc_for_startup(60)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(0 if gc.isenabled() else 3)\n"
        "child = os.waitpid(pid, 0)[1] == 0\n"
        "print(off, bar, off2, timer, gc.isenabled(), child)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"] * 6, out.stdout + out.stderr


def test_config_errors_are_one_line():
    from headpuppet.config import load_config
    from headpuppet.errors import ConfigError
    import pytest

    with pytest.raises(ConfigError, match="unknown config key 'model.nope'"):
        load_config("small-128", overrides=["model.nope=1"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config("small-128", overrides=["model.ch=abc"])
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_config("nope")
    cfg = load_config("paper-256", overrides=["train.k_shots=4", "loss.perceptual={laplacian-pyramid: 1.0}"])
    assert cfg.train.k_shots == 4 and cfg.loss.perceptual == {"laplacian-pyramid": 1.0}
    assert cfg.model.image_size == 256 and cfg.preset == "paper-256"
