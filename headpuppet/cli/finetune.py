"""``headpuppet fine-tune``: not built yet (see the project's issues)."""

from __future__ import annotations

import typer

from ._common import fail


def register(app: typer.Typer, state) -> None:
    @app.command("fine-tune", rich_help_panel="Pipeline",
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def finetune() -> None:
        """Fine-tune a checkpoint on frames of one new person. (not built yet)"""
        raise fail("'headpuppet fine-tune' is not built yet in this version", code=2)
