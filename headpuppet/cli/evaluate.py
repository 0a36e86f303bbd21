"""``headpuppet evaluate``: not built yet (see the project's issues)."""

from __future__ import annotations

import typer

from ._common import fail


def register(app: typer.Typer, state) -> None:
    @app.command("evaluate", rich_help_panel="Pipeline",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def evaluate() -> None:
        """Reproduce the paper's self-reenactment metrics (FID, SSIM, CSIM, landmark error). (not built yet)"""
        raise fail("'headpuppet evaluate' is not built yet in this version", code=2)
