"""``headpuppet plugins``: what is loaded."""

from __future__ import annotations

import json

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..plugins import list_components
from ..weights import weight_path
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
        table = Table(title="headpuppet plugins", box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("name", no_wrap=True)
        table.add_column("kind", no_wrap=True)
        table.add_column("plugin", no_wrap=True)
        table.add_column("distribution", no_wrap=True)
        table.add_column("version", no_wrap=True)
        table.add_column("status", no_wrap=True)
        notes = []
        for r in sorted(rows, key=lambda r: (r["kind"], r["name"])):
            if not r["available"]:
                status = "[yellow]unavailable[/]"
                notes.append(f"[yellow]{escape(r['name'])}[/]: {escape(r['unavailable'])}")
            elif r["kind"] == "weights":
                status = "present" if weight_path(r["name"]).exists() else "[dim]missing[/]"
            else:
                status = "[green]ok[/]"
            table.add_row(escape(r["name"]), r["kind"], escape(r["plugin"]), r["distribution"] or "-",
                          r["version"] or "-", status)
        console.print(table)
        for note in notes:
            console.print(note, highlight=False)
        for name, reason in state.pm.failures:
            console.print(f"[red]failed[/] {escape(name)}: {escape(reason)}", highlight=False)
