"""``headpuppet animate``: not built yet (see the project's issues)."""

from __future__ import annotations

import typer

from ._common import fail


def register(app: typer.Typer, state) -> None:
    @app.command("animate", rich_help_panel="Pipeline",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def animate() -> None:
        """Animate a photo (or shots, or a fine-tuned person) with a driver video. (not built yet)"""
        raise fail("'headpuppet animate' is not built yet in this version", code=2)
