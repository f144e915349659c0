"""Data-parallel training across processes (``torchrun --nproc_per_node N -m mara_bench run ...``).

Every function is a no-op in a single process, so the training loop calls them unconditionally.

* :func:`init` — joins the process group when launched by torchrun (``WORLD_SIZE`` > 1): NCCL on CUDA (one GPU
  per local rank), gloo on CPU.
* Sharding — every rank draws the *same* global data order (same seeded generator), and each global batch of
  ``batch_size`` frames is split across ranks (:func:`shard`), so N processes take the same optimisation steps
  as one process with the same batch size.
* :func:`allreduce_gradients` — after ``loss.backward()``: each rank's gradient is weighted by its share of the
  global batch and summed over ranks (one flat all-reduce), so every rank applies the identical update.
  Weights stay identical on all ranks; no DistributedDataParallel wrapper is needed (forces come from an
  inner ``autograd.grad`` of the energy, which DDP's reducer hooks do not expect).
* :func:`all_reduce_sum` — sums of metric numerators/denominators (train loss, validation errors).
* :func:`is_main` / :func:`barrier` — only rank 0 writes checkpoints, logs and results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def enabled() -> bool:
    return world_size() > 1


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "cpu") -> str:
    """Join the process group if launched with torchrun; return the device this rank should use."""
    if not launched_by_torchrun():
        return device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if str(device).startswith("cuda"):
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if str(device).startswith("cuda") else "gloo")
    return device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if enabled():
        import torch.distributed as dist

        dist.barrier()


def shard(indices: Sequence[int]) -> list[int]:
    """This rank's part of a global batch: every ``world_size``-th index starting at ``rank`` (may be empty)."""
    return list(indices)[rank()::world_size()]


def share(indices: Sequence[int]) -> float:
    """Fraction of the global batch this rank holds (the weight of its gradient)."""
    n = len(indices)
    return len(shard(indices)) / n if n else 0.0


def _device_of(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def allreduce_gradients(model: torch.nn.Module, weight: float) -> None:
    """grad <- sum over ranks of (weight_r * grad_r); parameters without a grad count as zero."""
    if not enabled():
        return
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    flat = flat * weight
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_reduce_sum(values: Sequence[float], device: torch.device | str | None = None) -> list[float]:
    """Element-wise sum of a list of numbers over ranks (float64)."""
    if not enabled():
        return [float(v) for v in values]
    import torch.distributed as dist

    dev = device or ("cuda" if dist.get_backend() == "nccl" else "cpu")
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def batches(graphs, order: Sequence[int], batch_size: int, dtype, device):
    """Yield ``(batch or None, weight)`` per global batch: this rank's shard collated, and its share.

    In one process this is every batch with weight 1.0. A rank whose shard of a (last, short) batch is empty
    gets ``None`` and must still call :func:`allreduce_gradients` with weight 0.
    """
    from ..graph import collate

    for s in range(0, len(order), batch_size):
        idx = list(order[s : s + batch_size])
        mine = shard(idx)
        yield (collate([graphs[i] for i in mine], dtype=dtype).to(device) if mine else None), share(idx)
