"""One resolver for every ``--device`` option (animate, fine-tune, evaluate, meta-train).

``auto`` (or nothing) picks ``cuda:<local_rank>`` when torch sees a CUDA device, else the CPU;
``cpu``, ``cuda`` and ``cuda:N`` are checked against what this machine has. Anything else, or a
CUDA device that is not there, is a one-line :class:`~headpuppet.errors.HeadpuppetError`.
:func:`native_bf16` says whether a device computes bf16 natively (what ``auto`` precisions pick).
:func:`tune_allocator` keeps glibc's malloc from giving tensor buffers back to the kernel after every use.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import HeadpuppetError

_CUDA = re.compile(r"^cuda(?::(\d+))?$")

#: how G can run (``--precision``): ``auto`` picks bf16 where :func:`native_bf16`, else fp32
PRECISIONS = ("auto", "fp32", "bf16")


class DeviceError(HeadpuppetError):
    """A ``--device`` value that is not a device, or a device this machine does not have."""


def resolve_device(device=None, local_rank: int = 0):
    """``device`` as a checked :class:`torch.device`.

    Args:
        device: ``None``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, or a ``torch.device``.
        local_rank: the GPU ``auto`` and a bare ``cuda`` mean (``torchrun``'s ``LOCAL_RANK``).

    Raises:
        DeviceError: unknown string, or CUDA asked for where torch sees none (or not that many).
    """
    import torch  # lazy: torch, +1.4 s on `headpuppet --help` (measured)

    if isinstance(device, torch.device):
        device = str(device)
    text = "auto" if device is None else str(device).strip().lower()
    if text == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = _CUDA.match(text)
    if m is None:
        raise DeviceError(f"--device must be cpu or cuda (or cuda:N, or auto), got {device!r}")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {device} was asked for but no CUDA device is available "
                          "(torch sees none); use --device cpu")
    index = int(m.group(1)) if m.group(1) is not None else local_rank
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"--device {device}: this machine has {count} CUDA device(s), numbered from 0")
    return torch.device(f"cuda:{index}")


def native_bf16(device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA with bf16 support, or a CPU with AVX-512 BF16
    or AMX (read from /proc/cpuinfo; False where that cannot be read)."""
    import torch  # lazy, as above

    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: what :func:`tune_allocator` sets: buffers up to 32 MB (glibc's own ceiling for this threshold on
#: 64-bit) come from the heap, and up to 256 MB of freed heap stays with the process
MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 256 << 20
_allocator_tuned: bool | None = None


#: MKL's conditional numerical reproducibility mode (``MKL_CBWR``) that :func:`reproducible_blas` sets
MKL_CBWR = "AUTO,STRICT"


def reproducible_blas() -> bool:
    """Set ``MKL_CBWR=AUTO,STRICT`` for MKL, torch's CPU BLAS, unless the environment sets it; returns
    whether it did. Only takes effect before MKL's first call (before torch computes anything).

    MKL picks its code paths by the buffers' memory alignment, which differs from run to run, so the
    same product could differ in its last bits. Fine-tuning's small fp32 convolutions (the dlib
    identity network's, on PyTorch's own GEMM path) passed that on to G's gradients: with a fixed
    seed, two ``headpuppet animate`` runs of the same photo and driver drew frames 2.2/255 apart on
    average (at most 40), and two in-process fine-tunes of 3 steps differed in 5 of 6 tries; with it
    set before torch, in none of 5, and the videos are identical. The cost did not show (the quick
    start with fine-tuning: 11.3 against 11.4 s median, four alternating pairs). ``headpuppet``
    commands call this first, except ``meta-train``: a warp-128 training step took 1.06x the time
    in this mode (median of nine alternating pairs, 0.93-1.34x), and training on several workers is
    not bit-reproducible anyway. A program using the Python API sets ``MKL_CBWR=AUTO,STRICT`` itself
    before importing torch (docs/api.md)."""
    if "MKL_CBWR" in os.environ:
        return False
    os.environ["MKL_CBWR"] = MKL_CBWR
    return True


def tune_allocator() -> bool:
    """Set glibc's malloc to keep freed tensor buffers for reuse, once per process; returns whether
    it is set (False off Linux/glibc, or with ``HEADPUPPET_MALLOC=default`` in the environment).

    glibc serves allocations above its mmap threshold (128 KB at first) with fresh pages from the
    kernel and hands them back when they are freed, and it trims the heap's free top. A tensor
    buffer made and freed at every call is then page-faulted in anew each time: the default
    model's G at batch 8 took about 9,600 page faults per call (38 MB of fresh pages), 2.4-3.0 ms
    of kernel time per frame. With the threshold at 32 MB and up to 256 MB of freed heap kept, it
    takes none, and renders in 0.74x the time (0.64-0.94x over four rounds of fresh processes,
    ``python bench/allocator.py``). Freed buffers are not lost: the process's next allocations
    reuse them. ``headpuppet`` commands
    and the Python API's ``animate``, ``fine_tune``, ``load_model`` and ``evaluate`` call this.
    """
    global _allocator_tuned
    if _allocator_tuned is not None:
        return _allocator_tuned
    _allocator_tuned = False
    if os.environ.get("HEADPUPPET_MALLOC", "").strip().lower() == "default":
        return False
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
                                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        pass
    return _allocator_tuned
