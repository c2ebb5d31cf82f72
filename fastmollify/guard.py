"""The model guard: a call changes nothing on the model, even with many threads sharing it.

Per model (weakly keyed) one ``_Shared`` record coordinates every call inside it:

* **A readers-writer lock.** Input-noise calls are readers: any number run at once. A
  weight-noise call (NoiseGrad, FusionGrad) is a writer: for the call its parameters point at
  noisy buffers, which no other call may see, so it waits for the readers to leave and runs
  alone. Waiting writers go first (no starvation); a thread that already holds the model (a
  model that calls fastmollify inside its forward) is let in again at once.
* **State saved by the first call in, restored by the last out.** The first call saves every
  parameter's ``requires_grad`` flag and every buffer (the object and its values), then freezes
  the parameters (the input gradient needs no weight gradients). The last call to leave, even
  on an exception or KeyboardInterrupt, puts back buffers that were replaced or written in
  place, and the flags. Modes are never touched.

Weight noise never writes the clean tensors: each ``NoisyWeight`` parameter points at a fresh
buffer (``param.data = noisy``) for the call and at its clean tensor again afterwards (checked).
"""
from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import torch

__all__ = ["guard_model", "NoisyWeight"]


@dataclass
class NoisyWeight:
    """One parameter under weight noise: its clean tensor, kept aside, and the buffer it points to."""

    index: int  # position in model.parameters(): the weight stream's index
    param: torch.nn.Parameter
    clean: torch.Tensor  # the parameter's own tensor; never written
    noisy: torch.Tensor  # the parameter's data during the call; each draw rewrites it from ``clean``


@dataclass
class _SavedBuffer:
    module: torch.nn.Module
    name: str
    tensor: torch.Tensor
    values: torch.Tensor


@dataclass
class _Shared:
    """What all calls inside one model share."""

    condition: threading.Condition = field(default_factory=threading.Condition)
    readers: dict = field(default_factory=dict)  # thread id -> calls it holds as a reader
    writer: int | None = None  # thread id of the weight-noise call inside
    writer_depth: int = 0
    writers_waiting: int = 0
    flags: list = field(default_factory=list)
    buffers: list = field(default_factory=list)


_SHARED: "weakref.WeakKeyDictionary[torch.nn.Module, _Shared]" = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()
_WARNED: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


def _shared(module: torch.nn.Module) -> _Shared:
    """The record of ``module``'s own model: wrappers (torch.compile, DataParallel) share it."""
    while isinstance(getattr(module, "_orig_mod", None), torch.nn.Module) or isinstance(
            module, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        module = getattr(module, "_orig_mod", None) or module.module
    with _SHARED_LOCK:
        record = _SHARED.get(module)
        if record is None:
            record = _SHARED[module] = _Shared()
        return record


def _inside(record: _Shared) -> bool:
    return bool(record.readers) or record.writer is not None


def _enter(module: torch.nn.Module, record: _Shared, exclusive: bool) -> None:
    me = threading.get_ident()
    with record.condition:
        if record.writer == me:  # re-entry from inside a weight-noise call
            record.writer_depth += 1
            return
        if exclusive and me in record.readers:
            raise RuntimeError("a weight-noise method (noisegrad, fusiongrad) cannot run inside another "
                               "fastmollify call on the same model; call it outside")
        if exclusive:
            record.writers_waiting += 1
            try:
                record.condition.wait_for(lambda: not _inside(record))
            finally:
                record.writers_waiting -= 1
        elif me not in record.readers:
            record.condition.wait_for(lambda: record.writer is None and not record.writers_waiting)
        first = not _inside(record)
        if first:
            _save(module, record)
        if exclusive:
            record.writer, record.writer_depth = me, 1
        else:
            record.readers[me] = record.readers.get(me, 0) + 1


def _leave(record: _Shared) -> None:
    me = threading.get_ident()
    with record.condition:
        if record.writer == me:
            record.writer_depth -= 1
            if record.writer_depth:
                return
            record.writer = None
        else:
            record.readers[me] -= 1
            if not record.readers[me]:
                del record.readers[me]
        if not _inside(record):
            _restore(record)
        record.condition.notify_all()


def _save(module: torch.nn.Module, record: _Shared) -> None:
    params = list(module.parameters())
    record.flags = [(p, p.requires_grad) for p in params]
    record.buffers = [_SavedBuffer(owner, name, b, b.detach().clone())
                      for owner in module.modules() for name, b in owner._buffers.items()
                      if b is not None and not b.is_inference()]  # inference tensors cannot change here
    for p in params:
        p.requires_grad_(False)


def _restore(record: _Shared) -> None:
    with torch.no_grad():
        for saved in record.buffers:
            if saved.module._buffers.get(saved.name) is not saved.tensor:
                saved.module._buffers[saved.name] = saved.tensor
            saved.tensor.copy_(saved.values)  # always: some ops (batch norm) write without a version bump
    for p, flag in record.flags:
        p.requires_grad_(flag)
    record.flags, record.buffers = [], []


def _warn_train_mode(module: torch.nn.Module) -> None:
    """Once per model: say which module in train mode makes the maps random or batch-dependent."""
    if module in _WARNED:
        return
    kinds = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._NormBase)
    for name, sub in module.named_modules():
        if sub.training and isinstance(sub, kinds):
            _WARNED.add(module)
            where = "the model" if not name else f"submodule {name!r} ({type(sub).__name__})"
            warnings.warn(f"{where} is in train mode: its dropout or batch statistics make the maps random and "
                          f"batch-dependent (buffers are restored after the call); call model.eval() first "
                          f"unless you mean it", stacklevel=5)
            return


@contextlib.contextmanager
def guard_model(model, weight_indices: Sequence[int] = ()):
    """Hold ``model`` for one call; yield a ``NoisyWeight`` per index in ``weight_indices``.

    With ``weight_indices`` the call is exclusive on the model (weight noise); without, it
    shares the model with any other input-noise calls. See the module docstring.
    """
    if not isinstance(model, torch.nn.Module):
        yield []
        return
    _warn_train_mode(model)
    record = _shared(model)
    _enter(model, record, exclusive=bool(weight_indices))
    noisy: list[NoisyWeight] = []
    try:
        params = list(model.parameters())
        for index in weight_indices:
            p = params[index]
            noisy.append(NoisyWeight(index, p, p.data, torch.empty_like(p.data)))
            p.data = noisy[-1].noisy
        yield noisy
    finally:
        for weight in noisy:
            weight.param.data = weight.clean
        _leave(record)
        for weight in noisy:
            if weight.param.data_ptr() != weight.clean.data_ptr():
                raise RuntimeError(f"parameter {weight.index} could not be restored to its clean tensor")
