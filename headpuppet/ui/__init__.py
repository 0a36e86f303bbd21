"""``headpuppet ui``: a local web page (Gradio) for animating a photo with a driver video, and for
driving it live from the browser's webcam.

The page is a front end only: every step goes through the same library API as the command line
(:func:`headpuppet.fewshot.session.load_person` = what ``animate`` does with SOURCE,
:func:`headpuppet.fewshot.sources.open_driver`,
:func:`headpuppet.fewshot.pipeline.render_video`,
:class:`headpuppet.live.LiveAnimator` for the webcam). Errors a person can fix (no face, not a video,
a driver that is too long) are shown on the page as one readable line; anything else is logged with
its traceback in the terminal and shown on the page as one line.

In: what the page's widgets hold (uploaded photos and videos as Gradio gives them, a fine-tuned
person folder, options, webcam frames ``(H, W, 3)`` uint8). Out: landmark previews, one-line
markdown messages, the result video's path, animated webcam frames.

- :mod:`.config` - :class:`UiConfig` (what ``headpuppet ui`` was started with: models, people,
  device) and :func:`require_gradio`.
- :mod:`.helpers` - upload values -> paths, the page's markdown messages, safe file names.
- :mod:`.previews` - face crops with their landmarks drawn over them.
- :mod:`.jobs` - the functions behind the page: :func:`inspect_source`, :func:`inspect_driver`,
  :func:`run_animation` (with :class:`ProgressReporter` onto Gradio's progress bar).
- :mod:`.webcam` - :func:`webcam_frame`: one browser-webcam frame in, one animated frame out.
- :mod:`.page` - :func:`build_ui` lays the functions out on a ``gr.Blocks`` page, :func:`launch` serves it.

The functions behind the page are plain functions (tested directly and through Gradio's client).
"""

from .config import DEFAULT_HOST, DEFAULT_MAX_SECONDS, DEFAULT_PORT, NO_PERSON, UiConfig, require_gradio
from .jobs import STAGES, ProgressReporter, check_driver, inspect_driver, inspect_source, run_animation
from .page import CSS, INTRO, build_ui, launch
from .previews import PREVIEW_SIZE, detect_preview, face_preview
from .webcam import WebcamSession, webcam_frame

__all__ = [
    "CSS", "DEFAULT_HOST", "DEFAULT_MAX_SECONDS", "DEFAULT_PORT", "INTRO", "NO_PERSON", "PREVIEW_SIZE",
    "ProgressReporter", "STAGES", "UiConfig", "WebcamSession", "build_ui", "check_driver", "detect_preview",
    "face_preview", "inspect_driver", "inspect_source", "launch", "require_gradio", "run_animation",
    "webcam_frame",
]
