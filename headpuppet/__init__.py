"""headpuppet: few-shot neural talking heads.

Implements Zakharov et al., "Few-Shot Adversarial Learning of Realistic Neural Talking Head
Models" (ICCV 2019). Plugins write ``from headpuppet import hookimpl``.

The Python API (what the CLI commands call; see docs/api.md)::

    import headpuppet

    headpuppet.animate("photo.jpg", "driver.mp4", "out.mp4")            # -> AnimateResult
    headpuppet.fine_tune(["frames/"], "person/", checkpoint="runs/00003-k8")  # -> Person, folder written
    model = headpuppet.load_model()                                      # -> Animator (weights/demo)
    headpuppet.evaluate("weights/demo", "heldout/", out="report/")      # -> EvalResults
"""

from importlib.metadata import PackageNotFoundError, version as _version

import pluggy

hookimpl = pluggy.HookimplMarker("headpuppet")

try:
    __version__ = _version("headpuppet")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

# The API functions live in headpuppet.fewshot.api, which imports nothing heavy at module level (torch,
# the networks and ffmpeg are imported inside each function): `import headpuppet` stays cheap, and so
# does the CLI's start-up, which imports this package. Imported after hookimpl, which plugins need.
from .fewshot.api import animate, fine_tune, load_model  # noqa: E402

__all__ = ["hookimpl", "__version__", "animate", "fine_tune", "load_model", "evaluate"]


def __getattr__(name: str):
    # headpuppet.evaluate (headpuppet.evaluation.api.evaluate) is imported on first use: the
    # evaluation package brings numpy, which `import headpuppet` (every plugin's) does not need
    if name == "evaluate":
        from .evaluation.api import evaluate

        return evaluate
    raise AttributeError(f"module 'headpuppet' has no attribute {name!r}")
