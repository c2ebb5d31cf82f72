"""``attribute_dataset``: explain every example of a data set into a zarr store, in one process or under torchrun.

Each rank takes a contiguous share of the store's blocks, reads its examples with a DataLoader
(workers, pinned memory and non-blocking copies on a GPU), calls the method with
``example_offset`` = the global index of each run of consecutive examples, and hands finished
blocks to a writer thread, so the GPU does not wait for the disk. The noise of example ``i`` is a
function of the seed and ``i`` only, so the store is the same whatever the number of processes,
the batch size or the chunk size.
"""
from __future__ import annotations

import hashlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .. import checks, compose, methods
from . import data
from . import store as stores
from .distributed import Group, share
from .errors import DatasetRunError

METHODS = {name: getattr(methods, name) for name in
           ("gradient", "smoothgrad", "mollify", "adaptgrad", "clipgrad", "noisegrad", "fusiongrad")}
COMPOSED = {name: getattr(compose, name) for name in ("integrated_gradients", "gradient_x_input")}
TARGETS = ("label", "predicted")
MAP_DTYPES = ("float32", "float16")
CHANNELS_REDUCE = ("none", "sum")
SET_BY_THE_RUN = ("example_offset", "progress")  # options attribute_dataset sets itself
NOT_IN_CONFIG = ("chunk_size", "seed", "reduce")  # options that do not change the maps, or have their own entry


@dataclass
class RunSummary:
    """What a run did: examples in the store, computed now, found complete, skipped (in the whole store)."""

    store: str
    examples: int
    computed: int
    already: int
    skipped: int
    seconds: float
    processes: int
    rank: int = 0

    @property
    def images_per_s(self) -> float:
        return self.computed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The final totals line."""
        skipped = (f", {self.skipped} skipped as unreadable (fastmollify.open_store({self.store!r}).skipped says "
                   f"why)" if self.skipped else "")
        if self.already == self.examples:
            return f"{self.store}: nothing to do, all {self.examples} examples are in the store{skipped}"
        return (f"{self.store}: {self.computed} examples attributed in {self.seconds:.1f} s "
                f"({self.images_per_s:.1f} images/s on {self.processes} process{'es' if self.processes > 1 else ''})"
                f", {self.already} already in the store{skipped}; {self.examples} in all")


def _jsonable(value):
    """Options as JSON for the store's configuration (tensors as lists, or a digest when large)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu()
        if t.numel() <= 4096:
            return {"tensor": t.tolist(), "dtype": str(t.dtype)}
        return {"tensor_sha256": hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy()).hexdigest(),
                "shape": list(t.shape), "dtype": str(t.dtype)}
    if callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', repr(value))}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _weights_digest(model) -> Optional[str]:
    """sha256 of the model's parameters and buffers (None for a plain function)."""
    if not isinstance(model, torch.nn.Module):
        return None
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _batch_dependence(method: str, options: dict) -> Optional[str]:
    """Why ``options`` would make an example's map depend on its batch (None when they do not)."""
    name = options.get("inner", "smoothgrad") if method in COMPOSED else method
    if not isinstance(name, str):
        return None
    if name in ("smoothgrad", "fusiongrad") and options.get("sigma") is None and options.get("bounds") is None:
        need = "sigma=... (absolute) or bounds=(lo, hi)"
    elif name in ("adaptgrad", "clipgrad") and options.get("bounds") is None:
        need = "bounds=(lo, hi)"
    else:
        return None
    return (f"{name} over a data set needs {need}: by default its noise scale comes from each batch's min and max, "
            f"so a map would depend on the batch it fell in (e.g. -o 'bounds=(0, 1)' for images in [0, 1], "
            f"or the normalised range with --mean/--std)")


def _check_arguments(method, options, target, map_dtype, channels_reduce, batch_size, workers, limit, block):
    if method not in METHODS and method not in COMPOSED:
        raise DatasetRunError(f"unknown method {method!r}; choose one of {', '.join([*METHODS, *COMPOSED])}")
    if not (target in TARGETS or (isinstance(target, int) and not isinstance(target, bool) and target >= 0)):
        raise DatasetRunError(f"target must be 'label', 'predicted' or a class index >= 0, got {target!r}")
    for name, value, allowed in (("map_dtype", map_dtype, MAP_DTYPES), ("channels_reduce", channels_reduce,
                                                                         CHANNELS_REDUCE)):
        if value not in allowed:
            raise DatasetRunError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    for name, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0), ("limit", limit, 1),
                             ("block", block, 1)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            raise DatasetRunError(f"{name} must be an integer >= {low}, got {value!r}")
    given = [k for k in SET_BY_THE_RUN if k in options]
    if given:
        raise DatasetRunError(f"option(s) {', '.join(given)} are set by attribute_dataset itself (example_offset = "
                              f"each example's global index); drop them")
    reduce = options.get("reduce", "mean")
    allowed = ("mean", "stats") if method in COMPOSED else ("mean", "sq", "var", "stats")
    if reduce not in allowed:
        raise DatasetRunError(f"reduce={reduce!r}: {method} over a data set takes reduce in {', '.join(allowed)}")
    problem = _batch_dependence(method, options)
    if problem:
        raise DatasetRunError(problem)


class _Attributor:
    """The method on one run of consecutive examples: maps, standard errors, targets, scores, backend."""

    def __init__(self, model, method, options, target, channels_reduce):
        self.model, self.method, self.target, self.channels_reduce = model, method, target, channels_reduce
        self.fn = METHODS.get(method) or COMPOSED[method]
        self.reduce = options.get("reduce", "mean")
        self.options = {k: v for k, v in options.items() if k != "reduce"}

    def __call__(self, x, labels, start: int):
        with torch.no_grad():
            out = self.model(x)
        if out.dim() == 1:
            target, targets, scores = None, torch.full((x.shape[0],), -1), out
        else:
            if self.target == "label":
                target = labels.to(out.device)
            elif self.target == "predicted":
                target = out.argmax(1)
            else:
                if self.target >= out.shape[1]:
                    raise DatasetRunError(f"target {self.target} is not a class of a model with {out.shape[1]} "
                                          f"outputs")
                target = torch.full((x.shape[0],), self.target, device=out.device)
            if self.target == "label" and int(target.max()) >= out.shape[1]:
                raise DatasetRunError(f"label {int(target.max())} is not a class of a model with {out.shape[1]} "
                                      f"outputs: use --target predicted or an index")
            probabilities = self.options.get("output") == "softmax"
            scores = (out.softmax(1) if probabilities else out).gather(1, target[:, None])[:, 0]
            targets = target
        stats = self._stats(x, target, start)
        maps = (stats.reduce(self.reduce, torch.float32) if self.reduce in ("sq", "var") else stats.mean).float()
        if self.channels_reduce == "sum":
            if maps.dim() != 4:
                raise DatasetRunError(f"channels_reduce='sum' needs [C, H, W] maps, got {list(maps.shape[1:])}")
            maps = maps.sum(1)
        return (maps.cpu().numpy(), stats.stderr.float().cpu().numpy() if self.reduce == "stats" else None,
                targets.cpu().numpy(), scores.float().cpu().numpy(), stats.backend)

    def _stats(self, x, target, offset):
        try:
            return self.fn(self.model, x, target, reduce="stats", example_offset=offset, progress=False,
                           **self.options)
        except (TypeError, ValueError) as error:
            raise DatasetRunError(f"{self.method}: {error}") from None


class _Blocks:
    """Block buffers filled example by example; a block is handed out when its last example arrives."""

    def __init__(self, layout, map_shape, map_dtype, stderr_shape):
        self.layout, self.map_shape, self.map_dtype = layout, map_shape, map_dtype
        self.stderr_shape, self.open = stderr_shape, {}

    def _block(self, b):
        if b not in self.open:
            start, stop = self.layout.bounds(b)
            n = stop - start
            self.open[b] = [stores.BlockData(
                maps=np.full((n, *self.map_shape), np.nan, dtype=self.map_dtype),
                stderr=None if self.stderr_shape is None else np.full((n, *self.stderr_shape), np.nan, np.float32),
                targets=np.full(n, -1, dtype=np.int64), labels=np.full(n, -1, dtype=np.int64),
                scores=np.full(n, np.nan, dtype=np.float32), errors=[""] * n), 0]
        return self.open[b]

    def put(self, index, map_=None, stderr=None, target=-1, label=-1, score=np.nan, error=""):
        """Record example ``index``; returns ``(block, data)`` when that completes its block, else None."""
        b = index // self.layout.block
        entry = self._block(b)
        block_data, i = entry[0], index - self.layout.bounds(b)[0]
        if map_ is not None:
            block_data.maps[i] = map_
            if block_data.stderr is not None:
                block_data.stderr[i] = stderr
        block_data.targets[i], block_data.labels[i], block_data.scores[i], block_data.errors[i] = \
            target, label, score, error
        entry[1] += 1
        start, stop = self.layout.bounds(b)
        if entry[1] == stop - start:
            return b, self.open.pop(b)[0]
        return None


def _batches(blocks, layout, batch_size) -> list:
    """The batches covering ``blocks``: whole cells ``[k * batch_size, (k + 1) * batch_size)`` of one global grid.

    The model sees the same batches whatever the shares and whatever was done before a resume, so
    not even BLAS rounding (which can depend on the batch) differs. Examples of a cell outside
    ``blocks`` are computed again and not stored: at most a batch per share or resume boundary.
    """
    cells = sorted({k for b in blocks for k in range(layout.bounds(b)[0] // batch_size,
                                                     (layout.bounds(b)[1] - 1) // batch_size + 1)})
    return [list(range(k * batch_size, min(layout.num_examples, (k + 1) * batch_size))) for k in cells]


def _runs(indices) -> list:
    """``(position, length)`` of each run of consecutive indices."""
    out = []
    for pos, index in enumerate(indices):
        if out and indices[pos - 1] == index - 1:
            out[-1][1] += 1
        else:
            out.append([pos, 1])
    return out


def attribute_dataset(model, dataset, store, method: str = "smoothgrad", *, batch_size: int = 32, workers: int = 0,
                      target="predicted", size=None, mean=None, std=None, channels: int = 3,
                      map_dtype: str = "float32", channels_reduce: str = "none",
                      limit: Optional[int] = None, block: Optional[int] = None, device=None, strict: bool = False,
                      overwrite: bool = False, progress=None, model_spec: Optional[str] = None,
                      **method_options) -> RunSummary:
    """Explain every example of ``dataset`` with ``method`` into the zarr store ``store``; returns a summary.

    ``dataset``: a folder in ImageFolder layout, ``"module:callable"`` or a Dataset of
    ``(image [C, H, W], label)``. ``target``: ``"predicted"``, ``"label"`` or a class index.
    ``size=(H, W)`` resizes, ``mean``/``std`` normalise per channel. ``map_dtype``: float32 or
    float16; ``channels_reduce="sum"`` stores ``[N, H, W]`` maps. ``limit``: the first K examples.
    ``block``: examples per store chunk (default: about 16 MiB of maps, at most 64). ``strict``:
    an unreadable example fails the run instead of being skipped. ``overwrite``: replace a store
    holding other settings. Other keyword arguments go to the method (``n=50``, ``bounds=(0, 1)``,
    ``seed``...). Under torchrun every rank calls this with the same arguments; a store that a
    killed run left behind is completed, not restarted.
    """
    options = dict(method_options)
    _check_arguments(method, options, target, map_dtype, channels_reduce, batch_size, workers, limit, block)
    device = checks.model_device(model, device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # NCCL and pinned-memory copies use the current device
    group = Group.from_env(device.type == "cuda")
    try:
        return _run(group, model, dataset, str(store), method, options, batch_size, workers, target, size, mean, std,
                    channels, map_dtype, channels_reduce, limit, block, device, strict, overwrite, progress,
                    model_spec)
    finally:
        group.close()


def _run(group, model, dataset, path, method, options, batch_size, workers, target, size, mean, std, channels,
         map_dtype, channels_reduce, limit, block, device, strict, overwrite, progress, model_spec) -> RunSummary:
    import fastmollify
    from tqdm.auto import tqdm

    source = data.source(dataset, channels)
    items = data.Items(source.dataset, size, mean, std)
    n = len(items) if limit is None else min(limit, len(items))
    if n == 0:
        raise DatasetRunError(f"the data set {source.spec} has no examples")
    first, example_shape = items.probe(n)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32) \
        if isinstance(model, torch.nn.Module) else torch.float32
    attributor = _Attributor(model, method, options, target, channels_reduce)
    _, image, label, _, _ = items[first]
    # the first readable example, computed once: checks the options and gives the shapes and the backend
    maps, stderr, _, _, backend = attributor(image[None].to(device, dtype), torch.tensor([label]), first)
    map_shape, stderr_shape = maps.shape[1:], None if stderr is None else stderr.shape[1:]
    layout = stores.Layout(n, block or stores.default_block(math.prod(map_shape) * np.dtype(map_dtype).itemsize))
    config = {
        "version": fastmollify.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "method": method, "seed": options.get("seed", 0), "reduce": options.get("reduce", "mean"),
        "options": _jsonable({k: v for k, v in options.items() if k not in NOT_IN_CONFIG}),
        "model": {"spec": model_spec or f"{type(model).__module__}.{type(model).__qualname__}",
                  "weights_sha256": _weights_digest(model)},
        "data": {"kind": source.kind, "spec": source.spec, "fingerprint": source.fingerprint, "num_examples": n,
                 "size": list(size) if size else None, "mean": _jsonable(mean), "std": _jsonable(std),
                 "channels": channels if source.kind == "folder" else None, "example_shape": list(example_shape)},
        "target": target, "map_dtype": map_dtype, "channels_reduce": channels_reduce,
        "map_shape": list(map_shape), "block": layout.block, "backend": backend, "device_type": device.type,
    }
    ours = {k: v for k, v in config.items() if k != "created"}
    differ = group.gather(stores.differences(group.broadcast(ours), ours))
    odd = next((rank for rank, d in enumerate(differ) if d), None)
    if odd is not None:  # every rank stops with the same message
        raise DatasetRunError(f"the ranks do not run the same thing (rank {odd} against rank 0: "
                              f"{'; '.join(differ[odd])}): a model factory must give the same weights on every rank "
                              f"(load a checkpoint or seed it) and every rank must see the same data")
    outcome = None
    if group.rank == 0:
        try:
            outcome = stores.prepare(path, config, layout, map_shape, map_dtype, stderr_shape, overwrite)
        except DatasetRunError as error:
            outcome = str(error)
    outcome = group.broadcast(outcome)
    if isinstance(outcome, str):
        raise DatasetRunError(outcome)
    complete = outcome
    pending_total = sum(b - a for a, b in (layout.bounds(k) for k in np.flatnonzero(~complete)))
    mine = [b for b in share(layout.num_blocks, group.rank, group.world) if not complete[b]]
    wanted = set(mine)
    writer = stores.Writer(path, layout)
    blocks = _Blocks(layout, map_shape, map_dtype, stderr_shape)
    loader = torch.utils.data.DataLoader(items, batch_sampler=_batches(mine, layout, batch_size),
                                         num_workers=workers, collate_fn=data.collate,
                                         pin_memory=device.type == "cuda", prefetch_factor=4 if workers else None)
    bar = tqdm(total=pending_total, desc=method, unit="image", smoothing=0.1, dynamic_ncols=True,
               disable=True if group.rank or progress is False else (None if progress is None else False))
    start_time, computed, seen = time.perf_counter(), 0, 0
    writes = []
    with ThreadPoolExecutor(1, thread_name_prefix="fastmollify-store") as pool:
        for batch in loader:
            if batch.fatal:
                raise DatasetRunError(batch.fatal)
            if batch.skipped and strict:
                index, reason = next(iter(batch.skipped.items()))
                raise DatasetRunError(f"example {index} cannot be read ({reason}); --strict fails on unreadable "
                                      f"examples (without it they are skipped and recorded in the store)")
            done = []
            if batch.images is not None:
                x = batch.images.to(device, dtype, non_blocking=True)
                for pos, length in _runs(batch.indices):
                    maps, stderr, targets, scores, _ = attributor(x[pos:pos + length],
                                                                  batch.labels[pos:pos + length],
                                                                  batch.indices[pos])
                    for k in range(length):
                        index = batch.indices[pos + k]
                        if index // layout.block in wanted:
                            computed += 1
                            done.append(blocks.put(index, maps[k], None if stderr is None else stderr[k],
                                                   int(targets[k]), int(batch.labels[pos + k]), float(scores[k])))
            done += [blocks.put(index, error=reason) for index, reason in batch.skipped.items()
                     if index // layout.block in wanted]
            for finished in filter(None, done):
                writes.append(pool.submit(writer.write, *finished))
            while len(writes) > 2 or (writes and writes[0].done()):
                writes.pop(0).result()
            seen = group.progress(len(done))
            bar.update(seen - bar.n)
        for write in writes:
            write.result()
    while group.rank == 0 and group.world > 1 and seen < pending_total:  # rank 0 shows the others' progress
        time.sleep(0.2)
        seen = group.progress()
        bar.update(seen - bar.n)
    computed_all = int(group.sum([computed])[0])
    seconds = time.perf_counter() - start_time
    bar.close()
    skipped = int(np.count_nonzero(writer.group["errors"][:] != "")) if group.rank == 0 else 0
    return RunSummary(path, n, computed_all, n - pending_total, skipped, seconds, group.world, group.rank)
