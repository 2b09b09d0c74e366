"""Distributed set-up: PyTorch's own engine (torchrun + DistributedDataParallel), nothing home-made.

Under ``torchrun --nproc_per_node N`` (one machine) or ``torchrun --nnodes M --rdzv-backend c10d
...`` (several) the environment carries RANK/WORLD_SIZE/LOCAL_RANK; we join the process group
(gloo on CPU, NCCL on CUDA) and rank 0 alone writes the run directory. Each rank trains on its own
contiguous part of the tokens (:func:`rank_part`). A checkpoint records the torchrun job that
wrote it (:func:`elastic_job`): when torchrun restarts the group after a failure
(``--max-restarts``; every node's processes start again, the healthy ones too), training goes on
from it. docs/scale.md has the cluster recipes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun; a plain process gets a world of one."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    if (info.world_size > 1 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
            and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0) > 0 and info.rank == 0):
        log.warning("torchrun shares one store across restarts: a restarted group can read a dead worker's "
                    "address and fail (pytorch/pytorch#135712); export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
                    "before torchrun (docs/scale.md)")
    if info.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def elastic_job() -> str | None:
    """The torchrun job this process belongs to (its rendezvous id), or None outside torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID") or None


def rank_part(data: Any, info: DistInfo) -> Any:
    """This rank's contiguous part of a token array (memmap or ``TokenShards``): rank ``r`` of ``W``
    reads tokens ``[r N / W, (r + 1) N / W)`` only, so on several machines each touches its own
    shards. A view: nothing is copied."""
    if not info.enabled:
        return data
    n = len(data)
    lo, hi = n * info.rank // info.world_size, n * (info.rank + 1) // info.world_size
    return data.part(lo, hi) if hasattr(data, "part") else data[lo:hi]


def teardown(info: DistInfo, finished: bool = True) -> None:
    """Leave the process group. After a run that finished, wait for every rank first: rank 0 still
    writes the run directory when the others are done, and a rank that destroyed its gloo group
    while a peer was still connected was seen to abort (SIGABRT) in a 2-process CI run. After a
    failure, no barrier: the other ranks may never reach it (torchrun stops them)."""
    if info.enabled and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``t`` over all processes (``t`` itself in a world of one)."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size
    return t


def any_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every process when ``flag`` is true on any (so all ranks stop together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_str(value: str, info: DistInfo, device: torch.device, max_len: int = 256) -> str:
    """Rank 0's short ASCII string (e.g. the run id) on every process, as a tensor (no pickle)."""
    if not info.enabled:
        return value
    buf = torch.zeros(max_len, dtype=torch.uint8, device=device)
    raw = value.encode("ascii")[:max_len]
    buf[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    dist.broadcast(buf, src=0)
    return bytes(buf.cpu().tolist()).rstrip(b"\0").decode("ascii")
