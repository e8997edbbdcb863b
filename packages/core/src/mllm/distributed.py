"""Small helpers for code that may run in one process or in several (torchrun).

Everything here works without ``torch.distributed`` being initialized: then there is one
process, its rank is 0 and collectives return their input. Process groups are started
by :mod:`mllm.pipeline.worker` (``nccl`` on GPUs, ``gloo`` on CPUs).
"""

from __future__ import annotations

from typing import Any


def _dist() -> Any:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return None
    if not dist.is_available() or not dist.is_initialized():
        return None
    return dist


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    dist = _dist()
    return dist.get_rank() if dist is not None else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    dist = _dist()
    return dist.get_world_size() if dist is not None else 1


def is_main() -> bool:
    """Whether this process writes shared outputs (global rank 0)."""
    return rank() == 0


def barrier() -> None:
    dist = _dist()
    if dist is not None:
        dist.barrier()


def gather_to_main(value: Any) -> list[Any] | None:
    """Every rank's ``value`` (picklable), in rank order, on rank 0; ``None`` elsewhere."""
    dist = _dist()
    if dist is None:
        return [value]
    out: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, out, dst=0)
    return out


def shard(items: list[Any]) -> list[Any]:
    """This rank's share of ``items``: every ``world_size``-th item from ``rank`` on."""
    return list(items[rank()::world_size()])
