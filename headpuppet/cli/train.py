"""``headpuppet meta-train``: not built yet (see the project's issues)."""

from __future__ import annotations

import typer

from ._common import fail


def register(app: typer.Typer, state) -> None:
    @app.command("meta-train", rich_help_panel="Pipeline",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def train() -> None:
        """Meta-learn embedder, generator and discriminator on a preprocessed dataset. (not built yet)"""
        raise fail("'headpuppet meta-train' is not built yet in this version", code=2)
