"""``headpuppet plugins``: what is loaded."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from ..plugins import list_components
from ._common import console, handle_errors


def register(app: typer.Typer, state) -> None:
    @app.command("plugins", rich_help_panel="Models and plugins")
    @handle_errors
    def plugins(as_json: bool = typer.Option(False, "--json", help="Print a JSON list for machines.")) -> None:
        """List loaded plugins: landmark detectors, perceptual losses, discriminators, metrics, weights, commands."""
        rows = list_components(state.pm, commands=state.plugin_commands)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="headpuppet plugins")
        for col in ("name", "kind", "plugin", "distribution", "version", "status"):
            table.add_column(col)
        for r in sorted(rows, key=lambda r: (r["kind"], r["name"])):
            status = "[green]ok[/]" if r["available"] else f"[yellow]unavailable[/]: {escape(r['unavailable'])}"
            table.add_row(escape(r["name"]), r["kind"], escape(r["plugin"]), r["distribution"] or "-", r["version"] or "-", status)
        console.print(table)
        for name, reason in state.pm.failures:
            console.print(f"[red]failed[/] {escape(name)}: {escape(reason)}")
