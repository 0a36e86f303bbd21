"""``headpuppet ui``: a local web page (Gradio) for animating a photo with a driver video, and for
driving it live from the browser's webcam.

The page is a front end only: every step goes through the same library API as the command line
(:func:`headpuppet.session.load_person` = what ``animate`` does with SOURCE,
:func:`headpuppet.sources.open_driver`, :func:`headpuppet.inference.animate`,
:class:`headpuppet.live.LiveAnimator` for the webcam). Errors a person can fix (no face, not a video,
a driver that is too long) are shown on the page as one readable line; anything else is logged with
its traceback in the terminal and shown on the page as one line.

The functions behind the page are plain functions of this module (tested directly and through
Gradio's client); :func:`build_ui` lays them out and :func:`launch` serves the page.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import HeadpuppetError, MediaError
from .progress import Reporter, Task

log = logging.getLogger("headpuppet.ui")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_MAX_SECONDS = 60.0
PREVIEW_SIZE = 160          # px per face in the landmark previews
NO_PERSON = ""              # the person dropdown's "use the uploaded photos"


def require_gradio():
    """Import gradio, or say how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # no calls home from a local tool
    try:
        import gradio as gr
    except ImportError:
        raise HeadpuppetError("the web UI needs Gradio, an optional extra: pip install -e \".[ui]\" "
                              "(or pip install \"headpuppet[ui]\")") from None
    return gr


# ---------------------------------------------------------------------- settings of one page
@dataclass
class UiConfig:
    """What ``headpuppet ui`` was started with."""

    checkpoints: list[Path] = field(default_factory=list)   # models offered besides the default
    people_dirs: list[Path] = field(default_factory=list)   # where fine-tuned person folders are looked for
    device: str = "cpu"
    max_seconds: float = DEFAULT_MAX_SECONDS
    out_dir: Path | None = None                             # results go here (default: a temp folder)
    pm: Any = None

    def __post_init__(self) -> None:
        from .session import AnimatorCache

        self.cache = AnimatorCache(self.pm)
        self._people: dict[tuple[str, float], tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        if self.out_dir is None:
            self.out_dir = Path(tempfile.mkdtemp(prefix="headpuppet-ui-"))

    # -------------------------------------------------------------- choices
    def models(self) -> list[tuple[str, str]]:
        """(label, path) of the models on offer, the default (demo) model first."""
        from .inference import default_checkpoint

        out = []
        default = default_checkpoint()
        if default.exists():
            out.append((f"default model ({default.parent.name}/{default.name})", str(default)))
        for c in self.checkpoints:
            out.append((_short(c), str(c)))
        return out

    def people(self) -> list[tuple[str, str]]:
        """(label, path) of the fine-tuned person folders found in ``people_dirs`` (and one level down)."""
        from .sources import is_person_dir

        found: list[tuple[str, str]] = []
        for d in self.people_dirs:
            d = Path(d)
            candidates = [d] + (sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
                                if d.is_dir() else [])
            for p in candidates:
                try:
                    if is_person_dir(p) and str(p) not in {v for _, v in found}:
                        found.append((_short(p), str(p)))
                except OSError:
                    continue
        return found

    def person_folder(self, path: str):
        """(animator, person) of a fine-tuned person folder, loaded once."""
        from .inference import Animator

        key = (str(Path(path).resolve()), _mtime(Path(path) / "meta.json"))
        with self._lock:
            if key not in self._people:
                self._people.clear()
                self._people[key] = Animator.from_person_dir(path, device=self.device, pm=self.pm)
            return self._people[key]

    def default_detector(self, model: str | None = None):
        return self.cache.get(model or None, self.device).make_detector()


def _short(path: Path | str) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


# ---------------------------------------------------------------------- inputs as Gradio gives them
def _paths(files) -> list[str]:
    """Upload values (paths, dicts with a path, objects with .name/.path) -> paths."""
    if files is None:
        return []
    if not isinstance(files, (list, tuple)):
        files = [files]
    out = []
    for f in files:
        if f is None:
            continue
        if isinstance(f, dict):
            f = f.get("path") or f.get("video", {}).get("path") or f.get("name")
        elif not isinstance(f, (str, os.PathLike)):
            f = getattr(f, "path", None) or getattr(f, "name", None)
        if f:
            out.append(str(f))
    return out


def _driver_path(video) -> str | None:
    paths = _paths(video)
    return paths[0] if paths else None


# ---------------------------------------------------------------------- landmark previews
def face_preview(crop: np.ndarray, points: np.ndarray | None, iris: np.ndarray | None = None,
                 size: int = PREVIEW_SIZE) -> np.ndarray:
    """A face crop with its landmark drawing (:func:`headpuppet.media.landmarks.rasterise`) laid over it."""
    import cv2

    from .media.landmarks import rasterise

    scale = size / crop.shape[0]
    img = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    if points is None:
        return img
    lines = rasterise(np.asarray(points, np.float64) * scale, size,
                      iris=None if iris is None else np.asarray(iris, np.float64) * scale)
    mask = lines.max(axis=2, keepdims=True) > 0
    return np.where(mask, lines, (img * 0.85).astype(np.uint8))


def _strip(tiles: list[np.ndarray], size: int = PREVIEW_SIZE) -> np.ndarray:
    if not tiles:
        return np.zeros((size, size, 3), np.uint8)
    gap = np.full((size, 4, 3), 255, np.uint8)
    parts = []
    for i, t in enumerate(tiles):
        if i:
            parts.append(gap)
        parts.append(t)
    return np.concatenate(parts, axis=1)


def _no_face_tile(image: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    s = min(h, w)
    sq = image[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    tile = cv2.resize(sq, (size, size), interpolation=cv2.INTER_AREA)
    tile = (tile * 0.4).astype(np.uint8)
    cv2.line(tile, (8, 8), (size - 8, size - 8), (230, 60, 60), 3)
    cv2.line(tile, (size - 8, 8), (8, size - 8), (230, 60, 60), 3)
    return tile


def detect_preview(images: list[np.ndarray], labels: list[str], detector, max_tiles: int = 8
                   ) -> tuple[np.ndarray, list[str], int]:
    """Find the largest face in each image (independently, as ``prepare_source`` does).

    Returns ``(strip of face crops with landmarks, one message per image, faces found)``.
    """
    from .media.crop import crop_frame, face_crop_box, iris_to_crop, to_crop

    tiles, lines, ok = [], [], 0
    for img, label in zip(images, labels):
        detector.reset()
        faces = detector.detect(np.ascontiguousarray(img))
        if not faces:
            lines.append(f"no face found in {label}")
            tile = _no_face_tile(img)
        else:
            ok += 1
            face = max(faces, key=lambda f: f.area)
            box = face_crop_box(face.points, img.shape[:2])
            crop = crop_frame(img, box, PREVIEW_SIZE)
            pts = to_crop(face.points, box, PREVIEW_SIZE)
            iris = iris_to_crop(face.iris, box, PREVIEW_SIZE) if face.iris is not None else None
            tile = face_preview(crop, pts, iris)
            lines.append(f"{label}: face found" + (f" ({len(faces)} faces; the largest is used)" if len(faces) > 1 else ""))
        if len(tiles) < max_tiles:
            tiles.append(tile)
    return _strip(tiles), lines, ok


# ---------------------------------------------------------------------- the page's functions
def _md(ok: bool, title: str, lines: list[str]) -> str:
    mark = "✔" if ok else "⚠"     # in DejaVu Sans, so they show without an emoji font
    body = "".join(f"\n- {_esc(line)}" for line in lines)
    return f"{mark} **{_esc(title)}**{body}"


def _esc(text: str) -> str:
    return re.sub(r"([\\`*_{}\[\]<>#|])", r"\\\1", str(text))


def inspect_source(cfg: UiConfig, files, person: str | None = None, model: str | None = None
                   ) -> tuple[np.ndarray | None, str]:
    """The source shots' faces and landmarks, before anything runs: ``(preview image, message)``."""
    from .sources import load_source_images

    try:
        if person:
            _, p = cfg.person_folder(person)
            tiles = [face_preview(f, pts, None if p.iris is None else p.iris[i])
                     for i, (f, pts) in enumerate(zip(p.frames[:8], p.points[:8]))]
            return _strip(tiles), _md(True, f"fine-tuned person {Path(person).name}: {p.num_shots} shot(s), "
                                            f"{p.finetune_steps} fine-tuning steps", [])
        paths = _paths(files)
        if not paths:
            return None, "Upload a photo of the person (or several shots of them)."
        src = load_source_images(paths, k=8)
        strip, lines, ok = detect_preview(src.images, src.labels, cfg.default_detector(model))
        good = ok == len(src.images)
        title = (f"{len(src.images)} shot(s), a face in each" if good else
                 f"no face in {len(src.images) - ok} of {len(src.images)} shot(s): use photos where the face "
                 "is clearly visible")
        return strip, _md(good, title, lines)
    except HeadpuppetError as exc:
        return None, _md(False, str(exc), [])
    except Exception as exc:  # noqa: BLE001 - the page must show a line, not a traceback
        log.exception("inspecting the source failed")
        return None, _md(False, f"could not read the upload ({type(exc).__name__}: {exc})", [])


def check_driver(cfg: UiConfig, path: str | None):
    """Open the driver video and refuse one that is longer than ``cfg.max_seconds``."""
    from .sources import open_driver

    if not path:
        raise MediaError("upload a driver video (an .mp4 of a face talking)")
    driver = open_driver(path)
    seconds = driver.num_frames / driver.fps if driver.fps else 0.0
    if cfg.max_seconds and seconds > cfg.max_seconds:
        raise MediaError(f"the driver video is {seconds:.0f} s long; this page takes up to {cfg.max_seconds:g} s "
                         f"(trim it, or start the page with --max-seconds {int(seconds) + 1})")
    return driver


def inspect_driver(cfg: UiConfig, video, model: str | None = None) -> tuple[np.ndarray | None, str]:
    """A few frames of the driver with their faces and landmarks: ``(preview image, message)``."""
    from .sources import sample_video_frames

    try:
        path = _driver_path(video)
        if not path:
            return None, "Upload a driver video: a face talking or moving (its audio is kept)."
        driver = check_driver(cfg, path)
        frames, idx = sample_video_frames(path, 4)
        strip, lines, ok = detect_preview(frames, [f"frame {i}" for i in idx], cfg.default_detector(model))
        seconds = driver.num_frames / driver.fps if driver.fps else 0.0
        info = (f"{driver.num_frames} frames at {driver.fps:g} fps ({seconds:.1f} s), "
                f"{driver.width}x{driver.height}, " + ("with audio" if driver.has_audio else "no audio"))
        if ok == 0:
            return strip, _md(False, "no face in the sampled frames of the driver: use a video that shows a face",
                              [info])
        return strip, _md(True, f"a face in {ok} of {len(frames)} sampled frames", [info])
    except HeadpuppetError as exc:
        return None, _md(False, str(exc), [])
    except Exception as exc:  # noqa: BLE001
        log.exception("inspecting the driver failed")
        return None, _md(False, f"could not read the driver ({type(exc).__name__}: {exc})", [])


class ProgressReporter(Reporter):
    """:class:`~headpuppet.progress.Reporter` onto a callback ``(fraction, description)``
    (Gradio's ``gr.Progress``); each task (landmarks, frames, fine-tuning) fills the bar once."""

    def __init__(self, callback: Callable[[float, str], None], stages: dict[str, str] | None = None):
        self.callback = callback
        self.stages = stages or {}
        self.messages: list[str] = []

    @contextmanager
    def task(self, description: str, total: int | None = None):
        desc = self.stages.get(description, description)
        t = _ProgressTask(self.callback, desc, total)
        t.update(0)
        yield t

    def info(self, message: str) -> None:
        self.messages.append(message)

    def warn(self, message: str) -> None:
        self.messages.append(message)


class _ProgressTask(Task):
    def __init__(self, callback, desc: str, total: int | None):
        self.callback, self.desc, self.total, self.done = callback, desc, total, 0
        self._last = 0.0

    def advance(self, n: int = 1, **fields) -> None:
        self.update(self.done + n)

    def update(self, completed: int | None = None, total: int | None = None, **fields) -> None:
        if total is not None:
            self.total = total
        if completed is not None:
            self.done = completed
        now = time.perf_counter()
        if self.total and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self.callback(min(1.0, self.done / max(self.total, 1)), f"{self.desc} {self.done}/{self.total}")


STAGES = {"landmarks": "driver landmarks", "frames": "rendering frames"}


def run_animation(cfg: UiConfig, files, person: str | None, video, motion: str = "relative", smooth: float = 1.0,
                  finetune_steps: int = 0, side_by_side: bool = False, paste: bool = False,
                  model: str | None = None, progress: Callable[[float, str], None] | None = None
                  ) -> tuple[str, str]:
    """Animate like ``headpuppet animate`` and return ``(result video path, summary)``.

    Raises :class:`HeadpuppetError` with a readable message for anything a person can fix.
    """
    from .inference import animate
    from .session import load_person

    progress = progress or (lambda f, d: None)
    driver_path = _driver_path(video)
    driver = check_driver(cfg, driver_path)
    sources = [person] if person else _paths(files)
    if not sources:
        raise MediaError("upload a photo of the person first (or choose a fine-tuned person)")
    reporter = ProgressReporter(progress, {**STAGES, "fine-tune": "fine-tuning"})
    t0 = time.perf_counter()
    progress(0.0, "loading the model and the photo")
    loaded = load_person(sources, checkpoint=model or None, device=cfg.device, pm=cfg.pm, shots=8,
                         finetune_steps=int(finetune_steps or 0), reporter=reporter, cache=cfg.cache)
    stem = Path(sources[0]).stem if not person else Path(person).name
    out_dir = Path(cfg.out_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{threading.get_ident() % 10000}"
    out = out_dir / f"{_safe(stem)}_{_safe(Path(driver_path).stem)}.mp4"
    result = animate(loaded.animator, loaded.person, driver, out, detector=loaded.detector,
                     relative=motion != "absolute", smooth=float(smooth or 0.0), side_by_side=bool(side_by_side),
                     paste=bool(paste), reporter=reporter)
    seconds = time.perf_counter() - t0
    lines = [f"{result.frames} frames at {result.fps:g} fps" + (" with the driver's audio" if result.has_audio else ""),
             f"{seconds:.1f} s in all on {cfg.device}"]
    if result.bridged:
        lines.append(f"{result.bridged} driver frame(s) had no face and were bridged from their neighbours")
    for label, n in result.several_faces:
        lines.append(f"{n} faces in the source {label}; the largest was used")
    lines += reporter.messages
    return str(result.output), _md(True, f"done: {out.name}", lines)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "result"


# ---------------------------------------------------------------------- webcam (live)
class WebcamSession:
    """A :class:`~headpuppet.live.LiveAnimator` for one browser tab's webcam, rebuilt when the
    source or the options change."""

    def __init__(self, cfg: UiConfig, key: tuple, sources: list[str], model: str | None, relative: bool,
                 smooth: float, fps: float):
        from .live import LiveAnimator
        from .session import load_person

        loaded = load_person(sources, checkpoint=model or None, device=cfg.device, pm=cfg.pm, cache=cfg.cache)
        self.key = key
        self.live = LiveAnimator(loaded.animator, loaded.person, detector=loaded.detector, relative=relative,
                                 smooth=smooth, fps=fps)
        self.times: list[float] = []


def webcam_frame(cfg: UiConfig, frame, files, person: str | None, motion: str, smooth: float,
                 model: str | None, session: WebcamSession | None, fps: float = 25.0):
    """One webcam frame in, one animated frame out: ``(frame, session, status)``."""
    if frame is None:
        return None, session, "waiting for the webcam"
    sources = [person] if person else _paths(files)
    if not sources:
        raise MediaError("upload a photo of the person first (or choose a fine-tuned person)")
    key = (tuple(sources), model, motion, float(smooth or 0.0))
    if session is None or session.key != key:
        session = WebcamSession(cfg, key, sources, model, motion != "absolute", float(smooth or 0.0), fps)
    frame = np.ascontiguousarray(np.asarray(frame)[..., :3], np.uint8)
    t = time.perf_counter()
    out = session.live.step(frame)
    session.times.append((time.perf_counter() - t) * 1e3)
    if max(out.shape[:2]) < 320:      # a small model's frames, enlarged for the page
        import cv2

        k = 320 // max(out.shape[:2]) + 1
        out = cv2.resize(out, (out.shape[1] * k, out.shape[0] * k), interpolation=cv2.INTER_LINEAR)
    recent = session.times[-25:]
    status = (f"{session.live.frames} frames, {np.mean(recent):.0f} ms per frame"
              + ("" if session.live.faces else " - no face seen yet"))
    return out, session, status


# ---------------------------------------------------------------------- the page
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
                finetune = gr.Slider(0, 200, value=0, step=10, label="Fine-tuning steps (slower, closer likeness)",
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
