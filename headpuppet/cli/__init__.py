"""The ``headpuppet`` command line (Typer). Thin: parse, build config, call the library.

``build_app(pm)`` makes a fresh app around a plugin manager (tests build their own); ``main()``
filters native libraries' log lines out of fd 2 (:mod:`headpuppet.nativelog`), builds the default
manager (entry points + ``--plugins-dir`` / ``HEADPUPPET_PLUGINS_DIR``), lets plugins add commands, and runs.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

import typer

from .. import __version__
from ..devices import reproducible_blas, tune_allocator
from ..nativelog import install_stderr_filter
from ..plugins import PLUGINS_DIR_ENV, env_plugin_manager, register_commands
from ._common import CliState, pause_gc_for_startup, setup_logging

PIPELINE = "Pipeline"
MANAGE = "Models and plugins"

# Command modules, each with ``register(app, state)``.
_MODULES = ("preprocess", "train", "finetune", "animate", "live", "ui", "evaluate", "weights", "plugins_cmd")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"headpuppet {__version__}")
        raise typer.Exit()


def build_app(pm=None) -> typer.Typer:
    """A new Typer app wired to the plugin manager ``pm`` (default: a fresh one)."""
    if pm is None:
        pm = env_plugin_manager()
    state = CliState(pm=pm)
    app = typer.Typer(
        name="headpuppet",
        help="Make the person in a photo talk and move like the person in a driver video "
             "(few-shot neural talking heads, Zakharov et al. 2019).",
        no_args_is_help=True,
        rich_markup_mode="rich",
        context_settings={"help_option_names": ["-h", "--help"]},
        pretty_exceptions_enable=False,
    )

    @app.callback()
    def root(
        version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                     help="Print the version and exit."),
        verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-v info, -vv debug)."),
        plugins_dir: str = typer.Option(None, "--plugins-dir", envvar=PLUGINS_DIR_ENV,
                                        help="Also load every *.py file in this folder as a plugin."),
    ) -> None:
        setup_logging(verbose)
        for name, reason in state.pm.failures:
            typer.secho(f"warning: plugin {name} {reason}; skipped", err=True, fg="yellow")

    for mod in _MODULES:
        importlib.import_module(f"{__name__}.{mod}").register(app, state)
    state.plugin_commands = register_commands(pm, app)
    return app


def _prescan(argv: list[str]) -> str | None:
    """``argv`` before Typer parses it: ``--plugins-dir`` goes into the environment (its plugins may
    add commands, so it must be known first), and the subcommand's name is returned (the first word
    that is not an option or ``--plugins-dir``'s value; None when there is none)."""
    command, value_next = None, False
    for i, arg in enumerate(argv):
        if value_next:
            value_next = False
        elif arg == "--plugins-dir":
            value_next = True
            if i + 1 < len(argv):
                os.environ[PLUGINS_DIR_ENV] = argv[i + 1]
        elif arg.startswith("--plugins-dir="):
            os.environ[PLUGINS_DIR_ENV] = arg.split("=", 1)[1]
        elif command is None and not arg.startswith("-"):
            command = arg
    return command


def main() -> None:
    if _prescan(sys.argv[1:]) != "meta-train":
        # before torch: fine-tuning with a seed gives the same weights every run (meta-training
        # keeps MKL's default: its steps took 1.06x the time in the reproducible mode, nine pairs)
        reproducible_blas()
    # first, while no thread exists (it forks): native libraries' log lines off the terminal, unless -vv
    install_stderr_filter(sys.argv[1:])
    pause_gc_for_startup()  # after the filter's fork: until the first progress bar, 5 s at most
    tune_allocator()
    app = build_app()
    try:
        app(prog_name="headpuppet")
    finally:
        # The interpreter's last garbage collections walk every object torch and mediapipe made:
        # 0.5-0.8 s of exit after an animate here, 0.1-0.2 s with them frozen (nothing they would
        # free matters once the command is done; files are closed by then and atexit still runs).
        gc.freeze()
