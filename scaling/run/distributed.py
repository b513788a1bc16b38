"""Data parallelism: the process group from torchrun's or Slurm/submitit's environment.

Each rank takes its slice of every global batch; gradients are averaged by DDP, so the loss equals
that of one process with the same global batch. Rank 0 alone writes the record and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_mean(self, value: torch.Tensor) -> torch.Tensor:
        """Mean of a tensor over ranks (the tensor itself when not distributed)."""
        if self.enabled:
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world_size
        return value


def _submitit_env() -> tuple[int, int, int] | None:
    if "SUBMITIT_EXECUTOR" not in os.environ and "SLURM_JOB_ID" not in os.environ:
        return None
    try:
        import submitit

        env = submitit.JobEnvironment()
    except RuntimeError:
        return None
    if env.num_tasks <= 1:
        return None
    os.environ.setdefault("MASTER_ADDR", env.hostnames[0])
    os.environ.setdefault("MASTER_PORT", str(20000 + int(env.job_id.split("_")[0]) % 20000))
    return env.global_rank, env.num_tasks, env.local_rank


def setup_distributed(device_type: str) -> DistContext:
    """Initialise ``torch.distributed`` when launched as several processes; otherwise a single-rank context."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    else:
        found = _submitit_env()
        if found is None:
            return DistContext()
        rank, world, local = found
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local)


def teardown_distributed(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
