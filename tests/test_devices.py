"""headpuppet.devices: the allocator setting that every command and API entry applies."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# a child process (malloc's settings are the process's): buffers of 1-30 MB made and freed in a
# loop, as tensors are at every G call; prints "tuned, page faults per round"
_CHILD = """
import resource
from headpuppet.devices import tune_allocator
tuned = tune_allocator()
assert tune_allocator() == tuned  # once per process
import numpy as np
def faults():
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        bufs = [np.ones(n << 18, np.float32) for n in (1, 4, 10, 20, 2, 30)]
        del bufs
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 10
faults()
print(tuned, faults())
"""


def _run(env_value: str | None) -> tuple[bool, float]:
    env = dict(os.environ)
    env.pop("HEADPUPPET_MALLOC", None)
    if env_value is not None:
        env["HEADPUPPET_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned == "True", float(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_tune_allocator_keeps_freed_buffers_for_reuse():
    """With the setting, buffers freed and made again come back without fresh pages from the
    kernel (no page faults); glibc's default hands them back and faults them in anew each time.
    HEADPUPPET_MALLOC=default leaves malloc as it is."""
    tuned, faults = _run(None)
    default, faults_default = _run("default")
    assert tuned and not default
    assert faults_default > 500            # about 2,000 a round here
    assert faults < 0.05 * faults_default  # none here


def test_tune_allocator_is_applied_by_the_cli_and_the_api(monkeypatch):
    """The commands and the Python API's entry points call it (cheaply: once per process)."""
    import headpuppet.cli as cli
    import headpuppet.evaluation.api as eval_api
    import headpuppet.fewshot.api as api

    for module in (cli, api, eval_api):
        assert module.tune_allocator.__module__ == "headpuppet.devices"
    calls = []
    monkeypatch.setattr(api, "tune_allocator", lambda: calls.append(1) or True)
    with pytest.raises(Exception):
        api.animate("/nonexistent/photo.jpg", "/nonexistent/driver.mp4", "/nonexistent-dir/out.mp4")
    assert calls
