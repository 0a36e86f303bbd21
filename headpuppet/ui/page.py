"""The page: :func:`build_ui` lays the functions of :mod:`.jobs` and :mod:`.webcam` out on a Gradio
``gr.Blocks`` (every event with an ``api_name``), :func:`launch` serves it.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable

from ..errors import HeadpuppetError
from .config import DEFAULT_HOST, DEFAULT_PORT, NO_PERSON, UiConfig, require_gradio
from .jobs import inspect_driver, inspect_source, run_animation
from .webcam import webcam_frame

log = logging.getLogger("headpuppet.ui")

CSS = """
#hp-title h1 {margin-bottom: 0}
.hp-note {font-size: 0.9em; opacity: 0.8}
"""

INTRO = """# headpuppet
Make the person in a photo move and talk like the person in a driver video
(few-shot neural talking heads, Zakharov et al. 2019). **1.** Upload a photo, **2.** upload a driver video,
**3.** press **Animate**. The detected faces and landmarks are shown as soon as you upload.
"""


def _friendly(gr, fn: Callable) -> Callable:
    """Errors as one readable line on the page (gr.Error), never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except HeadpuppetError as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # noqa: BLE001
            log.exception("the web UI's %s failed", fn.__name__)
            raise gr.Error(f"something went wrong ({type(exc).__name__}: {exc}); the terminal running "
                           f"`headpuppet ui` has the details", print_exception=False) from None

    return wrapper


def build_ui(cfg: UiConfig | None = None):
    """The page (a ``gr.Blocks``); every event has an ``api_name`` so Gradio's client can call it."""
    gr = require_gradio()
    cfg = cfg or UiConfig()
    models = cfg.models()
    if not models:
        raise HeadpuppetError("no model to offer: the default weights (weights/demo) are not installed; "
                              "start the page with --checkpoint RUN_OR_CHECKPOINT_FOLDER")
    people = cfg.people()

    with gr.Blocks(title="headpuppet", analytics_enabled=False) as demo:
        gr.Markdown(INTRO, elem_id="hp-title")
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown("### 1. The person")
                files = gr.File(label="Photo of the person (or several shots of them, or a video of them)",
                                file_count="multiple", file_types=["image", "video"], height=140,
                                elem_id="hp-source")
                person = gr.Dropdown([("(use the uploaded photos)", NO_PERSON)] + people, value=NO_PERSON,
                                     label="…or a fine-tuned person folder", visible=bool(people),
                                     elem_id="hp-person")
                src_preview = gr.Image(label="Detected face and landmarks", interactive=False, height=180,
                                       format="png", elem_id="hp-source-preview")
                src_status = gr.Markdown("Upload a photo of the person (or several shots of them).",
                                         elem_id="hp-source-status")
            with gr.Column():
                gr.Markdown("### 2. The driver")
                video = gr.Video(label=f"Driver video (up to {cfg.max_seconds:g} s; its audio is kept)",
                                 sources=["upload"], height=240, elem_id="hp-driver")
                drv_preview = gr.Image(label="Driver face and landmarks (sampled frames)", interactive=False,
                                       height=180, format="png", elem_id="hp-driver-preview")
                drv_status = gr.Markdown("Upload a driver video: a face talking or moving.",
                                         elem_id="hp-driver-status")
        with gr.Accordion("3. Options", open=True):
            with gr.Row():
                motion = gr.Radio([("relative: keep the photo's face shape", "relative"),
                                   ("absolute: the driver's landmarks as they are", "absolute")],
                                  value="relative", label="Motion", elem_id="hp-motion")
                smooth = gr.Slider(0, 5, value=1.0, step=0.5, label="Smoothing (frames; 0 = off)",
                                   elem_id="hp-smooth")
                finetune = gr.Slider(0, 200, value=40, step=10, label="Fine-tuning steps (0: none; more: slower, closer likeness)",
                                     elem_id="hp-finetune")
            with gr.Row():
                side = gr.Checkbox(label="Side by side with the driver", value=False, elem_id="hp-side")
                paste = gr.Checkbox(label="Paste back into the full photo", value=False, elem_id="hp-paste")
                model = gr.Dropdown(models, value=models[0][1], label="Model", elem_id="hp-model")
        with gr.Tabs():
            with gr.Tab("Animate a video", id="video"):
                run = gr.Button("Animate", variant="primary", elem_id="hp-run")
                result = gr.Video(label="Result (with the driver's audio)", interactive=False, autoplay=False,
                                  height=320, elem_id="hp-result")
                summary = gr.Markdown(elem_id="hp-summary")
            with gr.Tab("Live from the webcam", id="webcam"):
                gr.Markdown("Allow the camera when the browser asks (browsers allow it on `localhost`/"
                            "`127.0.0.1` and on https pages). Start facing the camera with your mouth closed: "
                            "the first frames are the reference the photo's pose is mapped to.",
                            elem_classes="hp-note")
                with gr.Row():
                    cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                                   height=360, elem_id="hp-cam")
                    cam_out = gr.Image(label="Live result", interactive=False, height=360, elem_id="hp-cam-out")
                cam_status = gr.Markdown(elem_id="hp-cam-status")
                recentre = gr.Button("Re-centre (take the next frames as the reference)", size="sm")
                cam_state = gr.State(None)

        def _inspect_source(files, person, model):
            return inspect_source(cfg, files, person, model)

        def _inspect_driver(video, model):
            return inspect_driver(cfg, video, model)

        def _run(files, person, video, motion, smooth, finetune, side, paste, model, progress=gr.Progress()):
            return run_animation(cfg, files, person, video, motion, smooth, finetune, side, paste, model,
                                 progress=lambda f, d: progress(f, desc=d))

        def _cam(frame, files, person, motion, smooth, model, session):
            return webcam_frame(cfg, frame, files, person, motion, smooth, model, session)

        def _recentre(session):
            if session is not None:
                session.live.reset()
            return session

        src_inputs = [files, person, model]
        files.change(_friendly(gr, _inspect_source), src_inputs, [src_preview, src_status],
                     api_name="inspect_source", show_progress="minimal")
        person.change(_friendly(gr, _inspect_source), src_inputs, [src_preview, src_status],
                      api_name=False, show_progress="minimal")
        video.change(_friendly(gr, _inspect_driver), [video, model], [drv_preview, drv_status],
                     api_name="inspect_driver", show_progress="minimal")
        run.click(_friendly(gr, _run), [files, person, video, motion, smooth, finetune, side, paste, model],
                  [result, summary], api_name="animate", concurrency_limit=1, concurrency_id="model")
        cam.stream(_friendly(gr, _cam), [cam, files, person, motion, smooth, model, cam_state],
                   [cam_out, cam_state, cam_status], api_name="webcam_frame", stream_every=0.04,
                   time_limit=600, concurrency_limit=1, concurrency_id="webcam", show_progress="hidden")
        recentre.click(_recentre, cam_state, cam_state, api_name=False)
    return demo


def launch(cfg: UiConfig, host: str = DEFAULT_HOST, port: int | None = None, share: bool = False,
           open_browser: bool = False, block: bool = True, quiet: bool = False,
           max_file_size: str = "500mb", announce: Callable[[str], None] | None = None):
    """Serve the page; returns ``(demo, url)`` (and blocks until Ctrl-C when ``block``)."""
    require_gradio()
    demo = build_ui(cfg)
    demo.queue(default_concurrency_limit=1)
    try:
        _, url, share_url = demo.launch(server_name=host, server_port=port, share=share, inbrowser=open_browser,
                                        show_error=True, prevent_thread_lock=True, quiet=quiet,
                                        max_file_size=max_file_size, ssr_mode=False, css=CSS,
                                        allowed_paths=[str(cfg.out_dir)], footer_links=["gradio"])
    except OSError as exc:
        raise HeadpuppetError(f"cannot serve on {host}:{port or DEFAULT_PORT} ({exc}); pick another --port") from None
    if announce is not None:
        shown = url if host not in ("0.0.0.0", "::") else url.replace(host, "127.0.0.1")
        announce(shown + ("" if not share_url else f" (public link: {share_url})"))
    if block:
        try:
            demo.block_thread()
        except KeyboardInterrupt:
            pass
        finally:
            demo.close()
    return demo, url
