"""Rank and world size from the launcher's environment (torchrun, accelerate launch, SLURM).

Generation and embedding need no collective communication: each process takes its
units (``catalog.units.shard``) or images (:func:`owns_image`) by rank and writes its own
manifest shards or embedding parts. So no process group is started; the launcher's
variables are read, and a plain ``python`` run is rank 0 of 1. Scoring and training do
need one (barriers, gathers): :func:`join_process_group` starts it, once, for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from evaluator.errors import InputError


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_env(rank: int | None = None, world_size: int | None = None) -> DistEnv:
    """Explicit arguments win; else RANK/WORLD_SIZE/LOCAL_RANK (torchrun, accelerate), else SLURM."""
    from evaluator.workspace import settings

    launched = settings.launcher()
    env_rank, env_world, local = launched.rank, launched.world_size, launched.local_rank
    rank = rank if rank is not None else (env_rank if env_rank is not None else 0)
    world_size = world_size if world_size is not None else (env_world if env_world is not None else 1)
    if world_size < 1:
        raise InputError(f"world_size must be >= 1 but is {world_size}")
    if not 0 <= rank < world_size:
        raise InputError(f"rank must be in [0, {world_size}) but is {rank}")
    return DistEnv(rank, world_size, local if local is not None else rank)


def device_for(device: str, env: DistEnv) -> str:
    """``cuda`` under a launcher means this process's GPU (``cuda:<local_rank>``)."""
    if device == "cuda" and env.world_size > 1:
        return f"cuda:{env.local_rank}"
    return device


def owns_image(image_id: int, env: DistEnv) -> bool:
    """Whether this rank handles ``image_id``: ``image_id % world_size == rank``.

    Image ids are hashes (``catalog.units.image_id_of``), so the split is even; an image's
    rank depends on its id alone, so adding images never moves one between ranks, and the
    union over ranks is every image once.
    """
    return int(image_id) % env.world_size == env.rank


def share_mask(image_ids: Any, env: DistEnv) -> Any:
    """bool array: which of ``image_ids`` (int64 array) this rank handles (see :func:`owns_image`)."""
    import numpy as np

    ids = np.asarray(image_ids, dtype=np.int64)
    return (ids % env.world_size) == env.rank


def join_process_group(env: DistEnv, device: str = "cpu", timeout: timedelta = timedelta(hours=4)) -> bool:
    """Join the launcher's process group (gloo on CPU, nccl on CUDA) when world_size > 1.

    ``timeout`` bounds every collective: a rank waiting at a barrier for a slower one
    (rank 0 validating, or writing the store) must not give up at torch's 30-minute
    default. Returns whether a group is in use. Rendezvous is the launcher's
    (MASTER_ADDR/MASTER_PORT from torchrun or accelerate).
    """
    if env.world_size == 1:
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size, timeout=timeout)
    return True


def leave_process_group() -> None:
    """After every rank's last collective: a barrier, then the group destroyed. Left to the
    interpreter's exit, gloo's threads can outlive it and abort the process ("terminate
    called without an active exception"), failing a launch that did its work."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank (a barrier too); ``[obj]`` alone."""
    if env.world_size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
