"""torchrun support: one process per GPU (or CPU share), DistributedDataParallel over NCCL or gloo.

`torchrun --nproc_per_node=N -m vmf_embeddings.main ...` sets RANK / WORLD_SIZE / LOCAL_RANK; `setup()`
joins the process group (NCCL when the run uses CUDA, gloo on CPU) and every other module asks
`world()` who it is. A plain `python -m vmf_embeddings.main` is a world of one and none of this runs.

What each rank does (vmf_embeddings.train / extract):
- every rank builds the same model from the same seed and holds the whole dataset; the batch samplers
  give each rank a disjoint, seeded share of every epoch (vmf_embeddings.datasets.samplers);
- DDP averages the gradients, so parameters (class weights, prototypes, temperature, kappa multiplier)
  stay identical; buffers (BatchNorm statistics, heads' running state) are broadcast from rank 0 at
  every forward, or `distributed.sync_bn=true` makes BatchNorm use the global batch;
- rank 0 alone decides the launch (fresh / resume / overwrite), validates, and writes checkpoints,
  TensorBoard, metrics.jsonl and embeddings; the others receive its decisions by broadcast.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _from_env() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def world() -> World:
    """This process's place in the torchrun job (a world of one without torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return _from_env()


def launched_by_torchrun() -> bool:
    """True in a multi-process job: started by torchrun, or a submitit task of a multi-task job."""
    adopt_submitit_tasks()
    return _from_env().enabled


def adopt_submitit_tasks() -> None:
    """In a submitit job with several tasks (`hydra/launcher=slurm_gpu hydra.launcher.tasks_per_node=N`, or
    submitit_local), export the variables torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT:
    submitit's TorchDistributedEnvironment), so the tasks form one DDP job like a torchrun launch."""
    if "RANK" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    try:
        from submitit import JobEnvironment
        from submitit.helpers import TorchDistributedEnvironment
    except ImportError:
        return
    if JobEnvironment().num_tasks > 1:
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def setup(device_name: str = "auto", timeout_s: float = 1800.0) -> World:
    """Join the process group once (NCCL when this run trains on CUDA, else gloo); a no-op without torchrun."""
    info = _from_env()
    if not info.enabled or dist.is_initialized():
        return world()
    use_cuda = torch.cuda.is_available() and not str(device_name).startswith("cpu")
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return world()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(value: Any = None, src: int = 0) -> Any:
    """`value` from rank `src` on every rank (pickled: only this job's own processes take part)."""
    if not world().enabled:
        return value
    box: List[Any] = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (a copy; the input is untouched). Gloo reduces CPU tensors, NCCL CUDA ones."""
    out = tensor.detach().clone()
    if world().enabled:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows in rank order (ranks may hold different row counts)."""
    if not world().enabled:
        return tensor
    size = world().world_size
    count = torch.tensor([tensor.shape[0]], device=tensor.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(size)]
    dist.all_gather(counts, count)
    counts_ = [int(c) for c in counts]
    padded = tensor.new_zeros((max(counts_), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.zeros_like(padded) for _ in range(size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:n] for part, n in zip(parts, counts_)])


def shard(n: int, info: Optional[World] = None) -> range:
    """The contiguous block of 0..n-1 this rank handles (ranks 0..n % size - 1 take one more)."""
    info = info or world()
    base, extra = divmod(n, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return range(start, start + base + (info.rank < extra))


def barrier() -> None:
    if world().enabled:
        dist.barrier()
