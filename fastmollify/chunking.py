"""The chunk policy: how many samples go through the model at once.

``chunk_size`` given: that many (at most n). Otherwise the first chunk holds one sample and is
measured, and the chunk becomes ``budget / bytes per sample`` (at least 1, at most n), so peak
memory is bounded by the budget whatever n is:

* on a GPU the bytes per sample are the allocator's measured peak above what was allocated
  before the chunk, and the budget is half the device's free memory;
* elsewhere (no allocator statistics) they are the bytes autograd saves for the backward pass
  (distinct storages, constants such as weights excluded) plus two copies of the noisy input
  (the input and its gradient), and the budget is 1/16 of the machine's available memory, at
  most 128 MiB (past a few hundred samples a larger chunk buys a CPU little speed).

Antithetic pairs are never split: chunks are then even. On out-of-memory the chunk is halved
and the chunk retried (the noise of a sample does not
depend on its chunk, so the result is the same).
"""
from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["ChunkPolicy", "is_oom", "available_memory"]

GPU_MEMORY_SHARE = 0.5  # share of free GPU memory a chunk may take
CPU_MEMORY_SHARE = 1 / 16  # share of the machine's available memory a chunk may take
CPU_BUDGET_CAP = 128 << 20  # bytes


def is_oom(error: BaseException) -> bool:
    """Whether ``error`` is an out-of-memory error (CUDA's, or a failed CPU allocation)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def available_memory() -> int:
    """Bytes of memory this machine can still give (``MemAvailable``), without swapping."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


class _SavedBytes:
    """Bytes of the distinct storages autograd saves for backward while active (this thread)."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.grad_fn is not None or t.requires_grad:  # constants (weights, buffers) do not grow with the chunk
            try:
                storage = t.untyped_storage()
            except (RuntimeError, NotImplementedError):  # a tensor without plain storage (a subclass): its size
                self.storages[id(t)] = t.numel() * t.element_size()
            else:
                self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    @property
    def total(self) -> int:
        return sum(self.storages.values())


class ChunkPolicy:
    """The chunk of samples per forward/backward for one run (see the module docstring)."""

    def __init__(self, n: int, chunk_size: int | None, device: torch.device, input_bytes: int, multiple: int = 1,
                 cap: int | None = None):
        self.n, self.device, self.input_bytes = n, device, input_bytes  # input_bytes: one sample, all inputs
        self.multiple = multiple  # chunks hold whole groups (antithetic pairs: 2)
        self.cap = n if cap is None else min(n, cap)  # the most a measured chunk may hold (tol: its check interval)
        self.pending = chunk_size is None and n > multiple  # the first chunk is still to be measured
        self.chunk = self._whole(min(chunk_size, n) if chunk_size is not None else multiple)
        self.bytes_per_sample: int | None = None

    def _whole(self, chunk: int) -> int:
        return max(self.multiple, chunk // self.multiple * self.multiple)

    def budget(self) -> int:
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(GPU_MEMORY_SHARE * free)
        return int(min(CPU_MEMORY_SHARE * available_memory(), CPU_BUDGET_CAP))

    @contextlib.contextmanager
    def measure(self, samples: int):
        """Run one chunk of ``samples``; if it is the first of a measured run, size the chunk from it."""
        if not self.pending:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            yield
            peak = torch.cuda.max_memory_allocated(self.device) - base
        else:
            saved = _SavedBytes()
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
                yield
            peak = saved.total + 2 * self.input_bytes * samples
        self.bytes_per_sample = max(peak // samples, 1)
        self.chunk = self._whole(min(self.cap, self.budget() // self.bytes_per_sample))
        self.pending = False

    def shrink(self, error: BaseException) -> bool:
        """After an error in a chunk: halve the chunk and return True if it was out-of-memory."""
        if not is_oom(error) or self.chunk == self.multiple:
            return False
        self.chunk = self._whole(self.chunk // 2)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return True
