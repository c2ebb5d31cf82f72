"""One process or many under torchrun: the process group, each rank's share, and the few collectives a run needs.

``Group.from_env()`` joins torchrun's process group from the environment (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``...; gloo on the CPU, NCCL for CUDA tensors with gloo beside it
for the small CPU messages), or uses one the caller already initialised, or is a group of one
process when there is neither. ``share`` gives each rank a contiguous range of blocks.
Progress counts go through the process group's key-value store (an atomic add per batch), not
through collectives, so ranks with different amounts of work never wait on each other until the
end.
"""
from __future__ import annotations

import os
import uuid

import torch
import torch.distributed as dist


def share(num_blocks: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous blocks out of ``num_blocks`` (shares differ in size by at most one)."""
    return range(rank * num_blocks // world, (rank + 1) * num_blocks // world)


class Group:
    """This process's rank in the run, and the run's collectives (trivial for one process)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, owned: bool = False):
        self.rank, self.world, self.local_rank, self.owned = rank, world, local_rank, owned
        self._count, self._key = 0, None

    @classmethod
    def from_env(cls, use_cuda: bool) -> "Group":
        """Join torchrun's process group (initialising it if needed), or a group of one."""
        if not dist.is_initialized():
            if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
                return cls()
            dist.init_process_group(backend="cpu:gloo,cuda:nccl" if use_cuda else "gloo")
            owned = True
        else:
            owned = False
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owned)

    def _device(self) -> torch.device:
        """Where this group's collectives take tensors (CUDA only for an NCCL-only group)."""
        return torch.device("cpu") if "gloo" in str(dist.get_backend()) else torch.device("cuda", self.local_rank)

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank; also starts a fresh progress counter for the run."""
        if self.world == 1:
            return obj
        box = [(obj, uuid.uuid4().hex)]
        dist.broadcast_object_list(box, src=0, device=self._device())
        obj, token = box[0]
        self._key = f"fastmollify/progress/{token}"
        return obj

    def gather(self, obj) -> list:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def sum(self, values) -> list:
        """Element-wise sum of ``values`` (numbers) over the ranks."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return t.tolist()

    def progress(self, done: int = 0) -> int:
        """Add ``done`` examples to the run's count; returns the count over all ranks."""
        if self.world == 1:
            self._count += done
            return self._count
        return int(dist.distributed_c10d._get_default_store().add(self._key, done))

    def close(self) -> None:
        """Leave the process group if this run created it."""
        if self.owned:
            dist.destroy_process_group()
