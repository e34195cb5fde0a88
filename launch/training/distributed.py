"""Process-group set-up for every launch path.

`deepspeed` (with or without `--no_ssh`), `torchrun` and a plain `python launch/pretrain.py` all end
here. The launchers export RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*; a plain run gets a one-process
group on a free loopback port, so the same DeepSpeed engine code path runs on a laptop.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_node_main(self) -> bool:
        return self.local_rank == 0

    @property
    def node_rank(self) -> int:
        return self.rank // self.local_world_size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_device(preference: str, local_rank: int) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("train.device=cuda but no CUDA device is visible")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device_preference: str = "auto") -> DistEnv:
    """Join (or create) the process group; import DeepSpeed only after its accelerator is chosen."""
    if "RANK" not in os.environ:  # no launcher: a group of one
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", str(world))))
    device = pick_device(device_preference, local_rank)
    if device.type == "cpu":
        # DeepSpeed picks its accelerator at import time; on CPU it must be told, or a machine with an
        # unusable CUDA driver would be chosen. The CPU accelerator then uses gloo.
        os.environ["DS_ACCELERATOR"] = "cpu"
    import deepspeed

    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo", verbose=False)
    return DistEnv(rank, world, local_rank, local_world, device)


def all_true(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on every rank (one tiny all-reduce)."""
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.item() == 0.0


def any_true(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on at least one rank (one tiny all-reduce)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.item() > 0.0


def mean_over_ranks(values: dict[str, torch.Tensor], device: torch.device) -> dict[str, float]:
    """Average scalar tensors over ranks in one all-reduce (for logging)."""
    if not values:
        return {}
    keys = sorted(values)
    t = torch.stack([values[k].detach().float().to(device) for k in keys])
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def sum_over_ranks(counts: list[int], device: torch.device) -> list[int]:
    """Integer counts summed over ranks in one all-reduce."""
    t = torch.tensor(counts, dtype=torch.int64, device=device)
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t.tolist()


def sum_tensor_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """`t` (on the process group's device) summed over ranks, in place, in one all-reduce; returns it."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def broadcast_object(obj, src: int = 0):
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_to_main(obj) -> list | None:
    """Every rank's `obj`, in rank order, on rank 0 (None elsewhere)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def rank0_decides(flag: bool, device: torch.device) -> bool:
    """Rank 0's value of `flag` on every rank (for decisions from clocks, which differ between ranks)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return t.item() == 1.0
