"""Peak memory on the CPU, where torch's allocator keeps no statistics.

Two measures. ``profiled_peak_bytes``: the torch profiler's memory events
(``profile_memory=True``: every allocation and free of the CPU allocator, with its size) in one
call; the peak of their running sum is the most tensor memory the call held on top of what was
live before it, a tracemalloc for tensors, exact and repeatable. And the process's resident set
size: ``peak_rss_bytes`` (the kernel's high-water mark, ``VmHWM``) after ``reset_peak_rss``
(``gc.collect()``, ``malloc_trim(0)``, then ``5`` written to ``/proc/self/clear_refs``, Linux >=
4.0, which resets the mark to the current RSS). ``VmHWM`` rather than ``ru_maxrss``: a process
started by ``subprocess`` inherits its parent's ``ru_maxrss`` across ``exec`` (a child of a 600 MB
parent reports at least 600 MB), and ``clear_refs`` does not lower that part; ``VmHWM`` is the
process's own. Within one process glibc's heap reuse and
trimming move the RSS by tens of MB from one call to the next; in a fresh process it is the
true peak of everything the call touched.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import sys
from typing import Callable, Optional

CPU_MEM_METHOD = "torch.profiler peak of live CPU tensor bytes (one extra call)"
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:
            _LIBC = False
    return _LIBC


def _status_kib(field: str) -> Optional[int]:
    """A ``/proc/self/status`` field in KiB, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_kib() -> Optional[int]:
    """The current resident set size in KiB (``VmRSS``), or None off Linux."""
    return _status_kib("VmRSS")


def peak_rss_bytes() -> int:
    """The process's peak resident set size in bytes: ``VmHWM``, else (off Linux) ``ru_maxrss``."""
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> Optional[int]:
    """Reset the kernel's peak-RSS mark to the current RSS; the current RSS in bytes, or None."""
    gc.collect()
    libc = _libc()
    if libc and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    rss = rss_kib()
    return None if rss is None else rss * 1024


def cpu_peak_reset_works() -> bool:
    """Whether ``reset_peak_rss`` really lowers the peak-RSS mark to the current RSS here."""
    base = reset_peak_rss()
    return base is not None and peak_rss_bytes() <= base + (8 << 20)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (Kineto prints a line or two on every profiler start and stop)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profiled_peak_bytes(fn: Callable[[], object]) -> int:
    """Peak of the running sum of CPU tensor allocations during ``fn()``, from the torch profiler.

    ``profile_memory=True`` makes every allocation and free of the CPU allocator a ``[memory]``
    event with its signed byte count; the peak of their running sum in time order is the most
    tensor memory the call held on top of what was live before it (tracemalloc for tensors).
    """
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            out = fn()
            del out
        events = [e for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]" and str(e.device_type()).endswith("CPU")]
    events.sort(key=lambda e: e.start_ns())
    running = peak = 0
    for event in events:
        running += event.nbytes()
        peak = max(peak, running)
    return peak
