"""``headpuppet ui``: serve the local web page (:mod:`headpuppet.ui`, needs the ``ui`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import MediaError
from ._common import console, default_device, handle_errors


def register(app: typer.Typer, state) -> None:
    @app.command("ui", rich_help_panel="Pipeline")
    @handle_errors
    def ui(
        host: str = typer.Option("127.0.0.1", "--host",
                                 help="Address to serve on (0.0.0.0 makes the page reachable from other machines)."),
        port: Optional[int] = typer.Option(None, "--port", min=1, max=65535,
                                           help="Port \\[default: 7860, or the next free one]."),
        share: bool = typer.Option(False, "--share/--no-share",
                                   help="Also make a public gradio.live link (off: the page stays on this machine)."),
        checkpoint: Optional[List[Path]] = typer.Option(None, "--checkpoint", "-c",
                                                        help="Offer this run or checkpoint folder as a model "
                                                             "(repeatable; the default model is always offered)."),
        people: Optional[List[Path]] = typer.Option(None, "--people",
                                                    help="Look for fine-tuned person folders here "
                                                         "\\[default: the current folder]."),
        device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda \\[default: cuda if available]."),
        max_seconds: float = typer.Option(60.0, "--max-seconds", min=1.0,
                                          help="Longest driver video the page accepts."),
        out_dir: Optional[Path] = typer.Option(None, "--out-dir",
                                               help="Keep the result videos here \\[default: a temporary folder]."),
        open_browser: bool = typer.Option(False, "--open", help="Open the page in the default browser."),
    ) -> None:
        """Open a local web page: upload a photo and a driver video, see the detected faces, get the
        video back (or drive the photo live from the webcam)."""
        # lazy: torch (+1.4 s at CLI start-up, measured); gradio optional
        from ..ui import UiConfig, launch, require_gradio
    
        require_gradio()
        for c in checkpoint or []:
            if not c.exists():
                raise MediaError(f"{c}: no such checkpoint folder")
        cfg = UiConfig(checkpoints=list(checkpoint or []), people_dirs=list(people or [Path.cwd()]),
                       device=default_device(device), max_seconds=max_seconds, out_dir=out_dir, pm=state.pm)
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)

        def announce(url: str) -> None:
            console.print(f"headpuppet ui: open [bold]{url}[/] in your browser (Ctrl-C stops); "
                          f"model on {cfg.device}, results in {cfg.out_dir}", highlight=False, soft_wrap=True)

        launch(cfg, host=host, port=port, share=share, open_browser=open_browser, announce=announce, quiet=True)
