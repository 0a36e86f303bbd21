"""headpuppet: few-shot neural talking heads.

Implements Zakharov et al., "Few-Shot Adversarial Learning of Realistic Neural Talking Head
Models" (ICCV 2019). Plugins write ``from headpuppet import hookimpl``.
"""

from importlib.metadata import PackageNotFoundError, version as _version

import pluggy

hookimpl = pluggy.HookimplMarker("headpuppet")

try:
    __version__ = _version("headpuppet")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["hookimpl", "__version__"]

# the evaluate stage (headpuppet.evaluation.api), as light at import as the functions above
from .evaluation.api import evaluate  # noqa: E402

__all__ += ["evaluate"]
