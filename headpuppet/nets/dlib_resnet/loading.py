"""Finding dlib's ``.dat`` (inside the installed ``face-recognition-models`` package), the
``dlib-resnet`` :class:`~headpuppet.protocols.WeightSpec` that converts it once into the weights
folder, and loading the converted network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ...protocols import WeightSpec
from ...weights import ensure, load_weights
from .dat import DAT_FILENAME, DAT_SHA256, LICENCE, PIP_PACKAGE, SOURCE, WEIGHTS_NAME, convert_dlib_dat
from .network import DlibResNet, build_dlib_resnet


def locate_dat() -> Path | None:
    """The ``.dat`` inside the installed ``face-recognition-models`` package, or None.

    Found with ``importlib.util.find_spec`` without importing the package: its ``__init__`` imports
    ``pkg_resources``, which setuptools >= 81 no longer ships, so
    ``face_recognition_models.face_recognition_model_location()`` fails on new environments.
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        p = Path(folder) / "models" / DAT_FILENAME
        if p.is_file():
            return p
    return None


def _convert(path):  # module-level so the manifest names it
    return convert_dlib_dat(path)


def dlib_resnet_spec():
    """The :class:`headpuppet.protocols.WeightSpec` of ``dlib-resnet`` (registered by the metrics plugin)."""
    return WeightSpec(
        name=WEIGHTS_NAME,
        description="dlib face-recognition ResNet (29 conv, 150 px chips -> 128-d), for CSIM (dlib) "
                    "and the dlib-identity loss",
        source=SOURCE,
        source_sha256=DAT_SHA256,
        licence=LICENCE,
        converter=_convert,
        filename=DAT_FILENAME,
        extra={"title": "dlib face ResNet", "locate": locate_dat, "pip": PIP_PACKAGE,
               "sha256_note": f"full sha256 of the file in {PIP_PACKAGE} 0.3.0"},
    )


def load_state(weights_dir: str | Path | None = None, device: str | torch.device = "cpu") -> dict:
    """The converted state dict, converting the installed package's ``.dat`` on first use.

    Raises :class:`headpuppet.errors.WeightsMissingError` (package absent, nothing imported) or a
    :class:`headpuppet.weights.WeightsError` (damaged file), each one line naming the fix.
    """
    ensure(dlib_resnet_spec(), weights_dir)
    return load_weights(WEIGHTS_NAME, weights_dir, device=str(device), title="dlib face ResNet")


def load_dlib_resnet(weights_dir: str | Path | None = None, device: str | torch.device = "cpu") -> DlibResNet:
    """A frozen :class:`DlibResNet` with the real weights (see :func:`load_state`)."""
    return build_dlib_resnet(load_state(weights_dir), device=device)
