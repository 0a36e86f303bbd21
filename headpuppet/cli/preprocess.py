"""``headpuppet preprocess``: not built yet (see the project's issues)."""

from __future__ import annotations

import typer

from ._common import fail


def register(app: typer.Typer, state) -> None:
    @app.command("preprocess", rich_help_panel="Pipeline",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def preprocess() -> None:
        """Crop faces, find landmarks and write a training dataset. (not built yet)"""
        raise fail("'headpuppet preprocess' is not built yet in this version", code=2)
