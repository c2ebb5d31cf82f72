"""The zarr (v3) store of a data-set run: its arrays, its configuration, per-block completion, resume.

Arrays (axis 0 = example, chunked by ``block`` examples, so each block is one chunk of each array
and ranks write disjoint chunks):

* ``maps`` ``[N, *map_shape]`` (NaN where not computed or skipped); ``stderr`` (only with
  ``reduce="stats"``: the Monte Carlo standard error per element of the unreduced map);
* ``targets`` (the class explained; -1 for skipped examples and ``[B]``-output models),
  ``labels`` (the data set's labels) and ``scores`` (the model's clean score for the target);
* ``errors`` (why an example was skipped; "" when it was not);
* ``complete`` ``[num_blocks]``: a block's flag is written only after its data is durable (the
  chunks written, and on a local file system fsynced with their folders), so a run killed at any
  instant recomputes exactly the blocks without the flag.

The group attribute ``fastmollify`` holds the configuration (method, options, seed, model, data,
sizes, library version, backend); ``fastmollify_ready`` is set once every array exists, so a store
whose creation was interrupted is recreated.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import DatasetRunError

CONFIG, READY = "fastmollify", "fastmollify_ready"
NOT_COMPARED = ("created",)  # configuration entries that do not change the store's contents
BLOCK_BYTES, MAX_BLOCK = 16 << 20, 64


@dataclass(frozen=True)
class Layout:
    """How examples map to blocks (one chunk of every array per block)."""

    num_examples: int
    block: int

    @property
    def num_blocks(self) -> int:
        return math.ceil(self.num_examples / self.block)

    def bounds(self, b: int) -> tuple[int, int]:
        """Examples ``[start, stop)`` of block ``b``."""
        return b * self.block, min(self.num_examples, (b + 1) * self.block)


def default_block(map_bytes: int) -> int:
    """Examples per block: about 16 MiB of maps per chunk, at most 64 examples."""
    return max(1, min(MAX_BLOCK, BLOCK_BYTES // max(1, map_bytes)))


def _local_root(path) -> Optional[Path]:
    text = str(path)
    return None if "://" in text else Path(text)


def _flatten(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        elif name not in NOT_COMPARED:
            out[name] = value
    return out


def differences(stored: dict, wanted: dict) -> list[str]:
    """``'name: stored -> wanted'`` for each configuration entry that differs."""
    old, new = _flatten(stored), _flatten(wanted)
    if stored.get("data", {}).get("kind") == "folder" == wanted.get("data", {}).get("kind"):
        old.pop("data.spec", None)  # a folder is compared by its listing (the fingerprint), wherever it is mounted
        new.pop("data.spec", None)
    return [f"{k}: {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]


def _open_existing(path):
    """The zarr group at ``path``, or None where nothing is stored yet."""
    import zarr

    root = _local_root(path)
    if root is not None:
        if not root.exists():
            return None
        if root.is_dir() and not any(root.iterdir()):
            return None
        if not (root / "zarr.json").is_file():
            raise DatasetRunError(f"--store {path} exists and is not a fastmollify store; choose another path "
                                  f"(it is left alone, even with --overwrite)")
    try:
        return zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    except zarr.errors.ContainsArrayError:
        raise DatasetRunError(f"--store {path} holds a zarr array, not a fastmollify store; choose another path") \
            from None


def prepare(path, config: dict, layout: Layout, map_shape, map_dtype: str, stderr_shape, overwrite: bool) \
        -> np.ndarray:
    """Check or create the store (rank 0 only); returns the ``complete`` flag of every block.

    An existing store must hold the same configuration; a different one (or one from another
    library version) raises unless ``overwrite``, and is left untouched.
    """
    import zarr

    try:
        existing = _open_existing(path)
        if existing is not None and not overwrite:
            stored = existing.attrs.get(CONFIG)
            if not isinstance(stored, dict):
                raise DatasetRunError(f"--store {path} is a zarr group without a fastmollify configuration; choose "
                                      f"another path or pass --overwrite")
            if existing.attrs.get(READY):
                if stored.get("version") != config["version"]:
                    raise DatasetRunError(
                        f"--store {path} was written by fastmollify {stored.get('version')}, this is "
                        f"{config['version']}: its maps may differ; pass --overwrite to recompute it or choose "
                        f"another --store")
                changed = differences(stored, config)
                if changed:
                    raise DatasetRunError(f"--store {path} holds a run with other settings ({'; '.join(changed)}): "
                                          f"rerun with the stored settings, choose another --store, or pass "
                                          f"--overwrite to replace it")
                _remove_partial_files(path)
                return np.asarray(existing["complete"][:], dtype=bool)
        _create(path, config, layout, map_shape, map_dtype, stderr_shape)
    except OSError as error:
        raise DatasetRunError(f"cannot write the store --store {path}: {error.strerror or error}; choose a "
                              f"writable path") from None
    except zarr.errors.BaseZarrError as error:
        raise DatasetRunError(f"--store {path}: {error}") from None
    return np.zeros(layout.num_blocks, dtype=bool)


def _dims(shape) -> tuple:
    """Dimension names (for xarray): ``channel, y, x`` for up to three axes, else ``dim_0...``."""
    names = ("channel", "y", "x")[-len(shape):] if 0 < len(shape) <= 3 else tuple(f"dim_{k}" for k in range(len(shape)))
    return ("example",) + names


def _create(path, config, layout, map_shape, map_dtype, stderr_shape) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w", attributes={CONFIG: config, READY: False})
    n, b = layout.num_examples, layout.block

    def array(name, shape, dtype, fill, dims):
        group.create_array(name, shape=(n,) + tuple(shape), chunks=(b,) + tuple(shape), dtype=dtype,
                           fill_value=fill, dimension_names=dims)

    array("maps", map_shape, map_dtype, np.nan, _dims(map_shape))
    if stderr_shape is not None:
        array("stderr", stderr_shape, "float32", np.nan, _dims(stderr_shape))
    array("targets", (), "int64", -1, ("example",))
    array("labels", (), "int64", -1, ("example",))
    array("scores", (), "float32", np.nan, ("example",))
    array("errors", (), str, "", ("example",))
    group.create_array("complete", shape=(layout.num_blocks,), chunks=(1,), dtype=bool, fill_value=False,
                       dimension_names=("block",))
    group.attrs[READY] = True


def _remove_partial_files(path) -> None:
    """Delete the temporary files of writes a killed run left behind (zarr writes to ``*.partial`` then renames)."""
    root = _local_root(path)
    if root is not None:
        for leftover in root.rglob("*.partial"):
            leftover.unlink(missing_ok=True)


@dataclass
class BlockData:
    """One block's results, in example order."""

    maps: np.ndarray
    stderr: Optional[np.ndarray]
    targets: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    errors: list


class Writer:
    """Writes whole blocks and then their completion flags (every rank, after ``prepare``)."""

    def __init__(self, path, layout: Layout):
        import zarr

        self.group = zarr.open_group(str(path), mode="r+")
        self.layout, self.root = layout, _local_root(path)
        self.arrays = {name: self.group[name] for name in ("maps", "stderr", "targets", "labels", "scores", "errors")
                       if name in self.group}
        self.complete = self.group["complete"]

    def write(self, b: int, data: BlockData) -> None:
        """Write block ``b``'s chunks, make them durable, then flag the block complete."""
        start, stop = self.layout.bounds(b)
        values = {"maps": data.maps, "stderr": data.stderr, "targets": data.targets, "labels": data.labels,
                  "scores": data.scores, "errors": np.array(data.errors, dtype=np.dtypes.StringDType())}
        try:
            for name, array in self.arrays.items():
                array[start:stop] = values[name]
            self._sync(self.arrays.values(), b)
            self.complete[b] = True
            self._sync([self.complete], b)
        except OSError as error:
            raise DatasetRunError(f"cannot write block {b} of the store {self.group.store}: "
                                  f"{error.strerror or error}") from None

    def _sync(self, arrays, b: int) -> None:
        """fsync block ``b``'s chunk files and their folders (local stores; object stores are durable on write)."""
        if self.root is None:
            return
        for array in arrays:
            key = array.metadata.encode_chunk_key((b,) + (0,) * (array.ndim - 1))
            chunk = self.root / array.path / key
            for target in (chunk, chunk.parent):
                if target.exists():  # a chunk equal to the fill value is not stored at all
                    fd = os.open(target, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)


class Store:
    """A finished or partial store, read lazily: ``maps[17]`` reads one chunk.

    ``maps``, ``targets``, ``labels``, ``scores``, ``errors`` and ``stderr`` (None unless
    ``reduce="stats"``) are zarr arrays (NumPy-style indexing returns NumPy arrays); ``config`` is
    the run's configuration; ``skipped`` maps example index -> reason; ``done`` tells which
    examples are computed.
    """

    def __init__(self, group):
        self.group = group
        self.config = dict(group.attrs[CONFIG])
        self.maps, self.targets, self.labels = group["maps"], group["targets"], group["labels"]
        self.scores, self.errors = group["scores"], group["errors"]
        self.stderr = group["stderr"] if "stderr" in group else None
        self.layout = Layout(self.config["data"]["num_examples"], self.config["block"])

    def __len__(self) -> int:
        return self.layout.num_examples

    @property
    def done(self) -> np.ndarray:
        """``[N]`` bool: whether each example's block is complete."""
        flags = np.asarray(self.group["complete"][:], dtype=bool)
        return np.repeat(flags, self.layout.block)[:len(self)]

    @property
    def skipped(self) -> dict:
        """``{index: reason}`` for the examples that could not be read."""
        reasons = self.errors[:]
        return {int(i): str(reasons[i]) for i in np.flatnonzero(reasons != "")}

    def __repr__(self) -> str:
        c = self.config
        return (f"Store({self.group.store}, method={c['method']!r}, maps={list(self.maps.shape)} {self.maps.dtype}, "
                f"done={int(self.done.sum())}/{len(self)}, skipped={len(self.skipped)})")


def open_store(path) -> Store:
    """Open a store written by ``attribute_dataset`` (read only, lazily indexed)."""
    import zarr

    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise DatasetRunError(f"no store at {path}: write one with `python -m fastmollify attribute --data ... "
                              f"--store {path}`") from None
    if not isinstance(group.attrs.get(CONFIG), dict) or not group.attrs.get(READY):
        raise DatasetRunError(f"{path} is not a complete fastmollify store (no configuration, or its creation was "
                              f"interrupted)")
    return Store(group)
