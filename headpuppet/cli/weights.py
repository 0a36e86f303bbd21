"""``headpuppet weights``: list, import and download pretrained weights (see :mod:`headpuppet.weights`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from .. import weights as W
from ..outputs import check_writable_dir
from ._common import console, err_console, handle_errors


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return "-"


def _warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def _check_dir(dest: Path | None) -> None:
    """The weights folder must be writable before anything is read, checked or downloaded."""
    check_writable_dir(W.weights_dir(dest), "--dir" if dest is not None else f"${W.ENV} (or --dir)")


def register(app: typer.Typer, state) -> None:
    weights_app = typer.Typer(
        help="Manage pretrained weights (VGG19, VGGFace, ...): list, import a file you downloaded, download.",
        no_args_is_help=True, rich_markup_mode="rich")
    app.add_typer(weights_app, name="weights", rich_help_panel="Models and plugins")

    dir_option = typer.Option(None, "--dir", help=f"Weights directory (default ${W.ENV} or ~/.cache/headpuppet/weights).")

    @weights_app.command("list")
    @handle_errors
    def list_(as_json: bool = typer.Option(False, "--json", help="Print a JSON list for machines."),
              dest: Path = dir_option) -> None:
        """List the weights plugins know about and whether each is present."""
        rows = W.status(state.pm, dest)
        if as_json:
            typer.echo(json.dumps([r.to_dict() for r in rows], indent=2))
            return
        table = Table(title=f"headpuppet weights in {W.weights_dir(dest)}")
        for col in ("name", "status", "size", "licence", "source"):
            table.add_column(col, overflow="fold")
        for r in rows:
            st = "[green]present[/]" if r.present else "[yellow]missing[/]"
            table.add_row(r.name, st, _size(r.size), r.licence, r.source)
        console.print(table)
        if any(not r.present for r in rows):
            console.print("Get one with `headpuppet weights download NAME`, or download its source by hand "
                          "and run `headpuppet weights import NAME FILE`.", highlight=False)

    @weights_app.command("import")
    @handle_errors
    def import_(name: str = typer.Argument(..., help="Weights name (see `headpuppet weights list`)."),
                file: Path = typer.Argument(..., help="The published original file, downloaded by hand."),
                dest: Path = dir_option) -> None:
        """Check the sha256 of a downloaded original file, convert it and store it as NAME.safetensors."""
        spec = W.get_spec(state.pm, name)
        _check_dir(dest)
        with err_console.status(f"checking and converting {file}"):
            path = W.import_file(spec, file, dest, warn=_warn)
        console.print(f"{name}: saved {path}", highlight=False)

    @weights_app.command("download")
    @handle_errors
    def download(name: str = typer.Argument(..., help="Weights name (see `headpuppet weights list`)."),
                 url: str = typer.Option(None, "--url", help="Download from here instead of the published source "
                                                             "(a mirror; file:// works)."),
                 dest: Path = dir_option) -> None:
        """Download the published file, check its sha256, convert it and store it as NAME.safetensors."""
        spec = W.get_spec(state.pm, name)
        _check_dir(dest)
        progress = Progress(TextColumn(f"[bold]{name}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=err_console, transient=False)
        with progress:
            task = progress.add_task("download", total=None)

            def report(done: int, total: int | None) -> None:
                progress.update(task, completed=done, total=total)

            path = W.download(spec, dest, url=url, progress=report, warn=_warn)
        console.print(f"{name}: saved {path}", highlight=False)
