"""Shared fixtures: real faces from ../shared/data/faces (skipped with the reason where absent),
scikit-image's astronaut, and a plugin manager built for each test. Helpers a test imports (tiny
datasets, configs and checkpoints, fake detectors, strip_ansi, shared_file) live in headpuppet.testing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headpuppet.testing import shared_file


@pytest.fixture
def astronaut() -> np.ndarray:
    """A real face photo that ships inside scikit-image: (512, 512, 3) uint8 RGB."""
    from skimage import data

    return data.astronaut()


@pytest.fixture
def shared_video() -> Path:
    return shared_file("videos/dtk_m030_neutral.mp4")


@pytest.fixture
def shared_photo() -> Path:
    return shared_file("photos/fr_obama.jpg")


@pytest.fixture(autouse=True)
def _no_plugin_env(monkeypatch):
    monkeypatch.delenv("HEADPUPPET_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("HEADPUPPET_PLUGINS_DIR", raising=False)


@pytest.fixture
def pm():
    from headpuppet.plugins import make_plugin_manager

    return make_plugin_manager()


@pytest.fixture
def torch_seed():
    import torch

    torch.manual_seed(0)
    np.random.seed(0)
    return 0
