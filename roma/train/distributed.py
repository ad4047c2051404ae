"""Process-group setup from torchrun's or submitit's environment; a no-op on one process.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Under SLURM,
under SLURM, `export_submitit_env` (called by roma.launch.job before execute(), and by
`init_distributed` when the variables are missing) derives them from submitit's JobEnvironment.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this call created the process group (so its caller destroys it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def export_submitit_env() -> tuple[str, int]:
    """torch.distributed env:// variables from submitit's job environment (multi-task SLURM jobs).

    Returns (job id, global rank). Raises when this is not a submitit job."""
    import submitit

    env = submitit.JobEnvironment()
    if env.num_tasks > 1:
        os.environ.setdefault("MASTER_ADDR", env.hostnames[0])
        # SLURM_JOB_ID is unique per array task, so tasks sharing a node get distinct ports
        os.environ.setdefault("MASTER_PORT", str(20000 + int(env.raw_job_id) % 20000))
        os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank),
                          LOCAL_WORLD_SIZE=str(env.num_tasks // max(env.num_nodes, 1)))
    return str(env.job_id), env.global_rank


def _env_from_submitit() -> None:
    """Fill the env:// variables from submitit when this is a SLURM job started without them."""
    if "RANK" in os.environ or "SLURM_JOB_ID" not in os.environ:
        return
    try:
        export_submitit_env()
    except Exception:  # noqa: BLE001 - not a submitit job
        return


def worker_ignore_job_signals(worker_id: int = 0) -> None:
    """DataLoader `worker_init_fn`: leave SIGTERM/SIGUSR2 to the main process.

    SLURM signals every process of a job step on preemption (SIGTERM) and before the time limit
    (SIGUSR2). torch's workers die on SIGTERM and would run submitit's requeue handler on SIGUSR2;
    either way the main process then fails instead of checkpointing and requeueing.
    """
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group when WORLD_SIZE > 1; pick the device (cuda:<local_rank> or cpu)."""
    _env_from_submitit()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = world > 1 and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local, dev, owns)


def wrap_ddp(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        x = x.clone()
        dist.all_reduce(x)
        x /= info.world_size
    return x


def cleanup(info: DistInfo) -> None:
    """Destroy the group this process created (a process that exits with a live group aborts)."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
