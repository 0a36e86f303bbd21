"""Multi-process training through ``torchrun`` + DistributedDataParallel (the same code runs on one CPU).

Meta-learning (Zakharov et al. 2019, section 3.2) samples one episode per video; with ``P`` processes
each process draws ``batch_size`` episodes per step, so the effective batch is ``P * batch_size``.

* :func:`init_distributed` reads ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (set by ``torchrun``) and
  starts a process group: NCCL on CUDA, Gloo on CPU. Without those variables it is a no-op (one process).
* :func:`wrap` puts a module into DDP. ``broadcast_buffers`` is off: spectral-norm power-iteration
  vectors are buffers updated in place during the forward pass, and a broadcast before each forward
  would overwrite tensors an earlier forward of the same step saved for backward. Every rank starts
  from rank 0's weights (DDP broadcasts parameters *and* buffers at construction) and the power
  iteration is a deterministic function of the weights, so the buffers stay identical without it.
* :class:`EpisodeBatchSampler` shards a per-epoch permutation of the videos across ranks, like
  ``DistributedSampler`` (every video is seen once per epoch across ranks, the last few wrapped),
  and derives its position from the global step alone, which is what makes resume exact.
* Only rank 0 writes files and reports; :func:`barrier` keeps the others from racing past a
  checkpoint being written.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from ..devices import resolve_device


@dataclass
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, on ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False  # we started the process group, so we tear it down

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the environment ``torchrun`` sets (0, 1, 0 otherwise)."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Start (or join) the process group when launched by ``torchrun``; pick this process's device
    (:func:`headpuppet.devices.resolve_device`, with ``LOCAL_RANK`` as the GPU ``auto`` means)."""
    rank, world, local = env_world()
    dev = resolve_device(device, local)
    info = DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)
    if world > 1:
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo",
                                    rank=rank, world_size=world)
            info.initialised_here = True
    elif dev.type == "cuda":
        torch.cuda.set_device(dev)
    return info


def cleanup(info: DistInfo) -> None:
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` is true on any rank (all ranks must call this together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average a dict of scalars over ranks (same keys everywhere) for the stats file."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=info.device, dtype=torch.float64)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def wrap(module: torch.nn.Module, info: DistInfo, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DDP-wrap ``module`` when running with more than one process; otherwise return it as is.

    ``find_unused_parameters``: the projection discriminator indexes ``W`` with the episode's
    video ids, which still gives all of ``W`` a (mostly zero) gradient, so it is not needed for the
    paper's networks; a plugin discriminator whose forward skips parameters needs it on.
    """
    if not info.enabled:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    kw = {"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DDP).parameters \
        else {"broadcast_buffers": False}  # torch >= 2.13 renamed it; both still sync at construction
    return DDP(module, device_ids=ids, output_device=ids[0] if ids else None,
               find_unused_parameters=find_unused_parameters, **kw)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return module.module if hasattr(module, "module") and isinstance(module.module, torch.nn.Module) else module


class EpisodeBatchSampler:
    """Infinite stream of batches of episode keys ``(epoch, video, repeat)`` for one rank.

    Per epoch the videos are permuted with ``(seed, epoch)``, padded by wrapping to a multiple of
    ``world_size``, and rank ``r`` takes every ``world_size``-th one from ``r``. When a rank's share
    is smaller than ``batch_size`` the share is repeated (``repeat`` counts the copies, so a video
    drawn twice in one epoch gets different frames). The last incomplete batch of an epoch is
    dropped. The position is a pure function of the global step: ``epoch = step // batches_per_epoch``.
    """

    def __init__(self, num_videos: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 start_step: int = 0):
        if num_videos < 1:
            raise ValueError("EpisodeBatchSampler needs at least one video")
        self.num_videos, self.batch_size, self.seed = num_videos, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        per_rank = -(-num_videos // world_size)
        self.per_rank = max(per_rank, batch_size)
        self.batches_per_epoch = self.per_rank // batch_size

    def epoch_keys(self, epoch: int) -> list[tuple[int, int, int]]:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_videos)
        total = -(-self.num_videos // self.world_size) * self.world_size
        perm = np.resize(perm, total)  # wraps the first few videos, like DistributedSampler
        share = perm[self.rank::self.world_size]
        keys = [(epoch, int(v), i // len(share)) for i, v in enumerate(np.resize(share, self.per_rank))]
        # np.resize repeats the share; the repeat index is position // len(share)
        return keys

    def position(self, step: int) -> tuple[int, int]:
        """``(epoch, batch within epoch)`` of the batch used at ``step`` (0-based)."""
        return divmod(step, self.batches_per_epoch)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch, b = self.position(self.start_step)
        while True:
            keys = self.epoch_keys(epoch)
            for i in range(b, self.batches_per_epoch):
                yield keys[i * self.batch_size:(i + 1) * self.batch_size]
            epoch, b = epoch + 1, 0
