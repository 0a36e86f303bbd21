"""``headpuppet weights``: not built yet (see the project's issues)."""

from __future__ import annotations

import typer

from ._common import fail


def register(app: typer.Typer, state) -> None:
    @app.command("weights", rich_help_panel="Models and plugins",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def weights() -> None:
        """Manage pretrained weights: list, import, download. (not built yet)"""
        raise fail("'headpuppet weights' is not built yet in this version", code=2)
