"""Rank and world size from the launcher's environment (torchrun, accelerate launch, SLURM).

Generation needs no collective communication: each process takes its units by rank
(``catalog.units.shard``) and writes its own manifest shards. So no process group is
started; the launcher's variables are read, and a plain ``python`` run is rank 0 of 1.
"""

from __future__ import annotations

from dataclasses import dataclass

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
