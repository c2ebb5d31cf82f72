"""Data-set runs (``attribute --data``, ``fm.attribute_dataset``): the store against independent computations.

Real processes where it matters: two gloo processes under torchrun against one, a run killed with
SIGKILL and resumed against an uninterrupted one. A tiny model and a generated 8x8 ImageFolder
keep each run to a second or two.
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fastmollify as fm
from fastmollify import __main__ as cli

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# unique module names: other test files put their own tiny modules on sys.path
MODELS = textwrap.dedent("""
    import os, time
    import torch

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                                   torch.nn.Linear(4 * 8 * 8, 3))

    class Slow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make()

        def forward(self, x):
            time.sleep(float(os.environ.get("FM13_SLEEP", "0")))
            return self.net(x)

    def slow():
        return Slow()

    def unseeded():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
""")
DATASETS = textwrap.dedent("""
    import torch

    class Items(torch.utils.data.Dataset):
        def __init__(self, make):
            self.make = make

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return self.make(i)

    def not_pairs():
        return Items(lambda i: torch.rand(3, 8, 8))

    def mixed_sizes():
        return Items(lambda i: (torch.rand(3, 8, 8 + (i == 2)), i % 3))
""")
BASE = ["attribute", "--model", "fm13_models:make", "--data", "pics", "--method", "smoothgrad", "-o", "n=3",
        "-o", "bounds=(0, 1)", "--block", "2", "--workers", "0", "--quiet", "--threads", "1", "-o", "chunk_size=3"]


def _images(root: Path, count=4, rng=None):
    from PIL import Image

    rng = rng or np.random.default_rng(0)
    for c in range(3):
        d = root / f"class{c}"
        d.mkdir(parents=True)
        for k in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(d / f"{k}.png")


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    """A folder with the model and data-set modules and a 12-image ImageFolder (3 classes)."""
    root = tmp_path_factory.mktemp("dataset")
    (root / "fm13_models.py").write_text(MODELS)
    (root / "fm13_data.py").write_text(DATASETS)
    _images(root / "pics")
    return root


@pytest.fixture
def work(space, monkeypatch):
    monkeypatch.chdir(space)
    monkeypatch.syspath_prepend(str(space))
    return space


@pytest.fixture(scope="module")
def reference(space):
    """An uninterrupted single-process run (batch size 5) of BASE, the store the others must equal."""
    old = os.getcwd()
    os.chdir(space)
    sys.path.insert(0, str(space))
    try:
        assert cli.main(BASE + ["--store", "reference.zarr", "--batch-size", "5"]) == 0
    finally:
        os.chdir(old)
        sys.path.remove(str(space))
    return fm.open_store(space / "reference.zarr")


def _run(args, cwd, env=None, **kwargs):
    environment = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([PY, "-m", "fastmollify", *args], cwd=cwd, env=environment, capture_output=True,
                          text=True, timeout=240, **kwargs)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("fastmollify: error: ")
    return err[0]


def _tree(path: Path) -> dict:
    """Every file of a store with a digest of its bytes."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _assert_same(a, b):
    for name in ("maps", "targets", "labels", "scores", "errors"):
        np.testing.assert_array_equal(getattr(a, name)[:], getattr(b, name)[:], err_msg=name)
    assert a.done.all() and b.done.all()


def _folder_tensors(root: Path):
    """The ImageFolder's images and labels, read here with PIL (class folders and files in sorted order)."""
    from PIL import Image

    xs, ys = [], []
    for label, d in enumerate(sorted(p for p in root.iterdir() if p.is_dir())):
        for f in sorted(d.iterdir()):
            pixels = np.asarray(Image.open(f).convert("RGB"))
            xs.append(torch.tensor(pixels, dtype=torch.float32).permute(2, 0, 1) / 255)
            ys.append(label)
    return torch.stack(xs), torch.tensor(ys)


def test_store_equals_the_method_on_the_whole_data_set(reference, space):
    import fm13_models

    model = fm13_models.make().eval()
    x, labels = _folder_tensors(space / "pics")
    with torch.no_grad():
        logits = model(x)
    predicted = logits.argmax(1)
    want = fm.smoothgrad(model, x, predicted, n=3, bounds=(0, 1), example_offset=0)
    s = reference
    assert s.maps.shape == (12, 3, 8, 8) and s.maps.chunks == (2, 3, 8, 8)
    np.testing.assert_allclose(s.maps[:], want.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(s.targets[:], predicted.numpy())
    np.testing.assert_array_equal(s.labels[:], labels.numpy())
    np.testing.assert_allclose(s.scores[:], logits.gather(1, predicted[:, None])[:, 0].numpy(), rtol=1e-5, atol=1e-6)
    assert s.skipped == {} and s.stderr is None
    c = s.config
    assert (c["method"], c["options"], c["seed"], c["version"]) == ("smoothgrad", {"n": 3, "bounds": [0, 1]}, 0,
                                                                    fm.__version__)
    assert c["model"]["spec"] == "fm13_models:make" and c["data"]["num_examples"] == 12 and c["backend"]
    # one example read lazily: the same as the slice
    np.testing.assert_array_equal(s.maps[7], s.maps[:][7])


def test_two_gloo_processes_equal_one(reference, space):
    out = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                          "fastmollify", *BASE, "--store", "two.zarr", "--batch-size", "5"],
                         cwd=space, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr
    assert "on 2 processes" in out.stdout and out.stdout.count("examples attributed") == 1  # rank 0 reports
    # bit for bit: both runs feed the model the same batches (one global grid of batch_size), whatever the shares
    _assert_same(fm.open_store(space / "two.zarr"), reference)


def test_ranks_with_different_models_are_refused(space):
    """A factory that draws random weights gives each rank another model: refused before any store is made."""
    args = [a.replace("fm13_models:make", "fm13_models:unseeded") for a in BASE]
    out = subprocess.run([PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                          "fastmollify", *args, "--store", "unseeded.zarr"], cwd=space, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=240)
    assert out.returncode != 0  # torchrun reports the failed ranks (with its own traceback); each rank one line:
    assert out.stderr.count("fastmollify: error: the ranks do not run the same thing (rank 1 against rank 0: "
                            "model.weights_sha256: ") == 2
    assert not (space / "unseeded.zarr").exists()


def test_chunk_size_changes_only_rounding(reference, work):
    """Another chunk size (the engine merges chunks' statistics) or batch size (BLAS may block a batch differently)
    moves the maps by rounding only."""
    assert cli.main([*BASE, "-o", "chunk_size=1", "--store", "chunk1.zarr", "--batch-size", "4"]) == 0
    s = fm.open_store(work / "chunk1.zarr")
    np.testing.assert_allclose(s.maps[:], reference.maps[:], rtol=1e-5, atol=1e-8)
    np.testing.assert_array_equal(s.targets[:], reference.targets[:])


def test_killed_run_resumes_to_the_uninterrupted_store(reference, space, work, capsys):
    args = [*BASE, "--model", "fm13_models:slow", "--block", "1", "--batch-size", "5", "--store", "killed.zarr"]
    flags = space / "killed.zarr" / "complete" / "c"
    proc = subprocess.Popen([PY, "-m", "fastmollify", *args], cwd=space, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1", FM13_SLEEP="0.1"))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and (not flags.is_dir() or len(list(flags.iterdir())) < 3):
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in flags.iterdir()}
    assert 3 <= len(done_before) < 12, done_before
    assert cli.main(args) == 0  # resumed, now without the sleep
    line = capsys.readouterr().out
    assert f"{12 - len(done_before)} examples attributed" in line and f"{len(done_before)} already in the store" in line
    assert {p.name: p.stat().st_mtime_ns for p in flags.iterdir() if p.name in done_before} == done_before
    _assert_same(fm.open_store(space / "killed.zarr"), reference)
    assert not list((space / "killed.zarr").rglob("*.partial"))


def test_half_written_block_is_recomputed_and_finished_store_is_a_noop(reference, work, capsys):
    import shutil

    import zarr

    shutil.copytree(work / "reference.zarr", work / "half.zarr")
    args = [*BASE, "--store", "half.zarr"]
    assert cli.main(args) == 0 and "nothing to do" in capsys.readouterr().out
    zarr.open_group(str(work / "half.zarr"), mode="r+")["complete"][3] = False  # block 3 (examples 6, 7) unfinished
    (work / "half.zarr" / "maps" / "c" / "3" / "0" / "0" / "0").write_bytes(b"half a chunk")
    (work / "half.zarr" / "maps" / "c" / "3" / "0" / "0" / "0.abc.partial").write_bytes(b"left by a kill")
    before = _tree(work / "half.zarr")
    assert cli.main(args) == 0
    assert "2 examples attributed" in capsys.readouterr().out
    after = _tree(work / "half.zarr")
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed == {"maps/c/3/0/0/0", "complete/c/3", "maps/c/3/0/0/0.abc.partial"}, changed
    _assert_same(fm.open_store(work / "half.zarr"), reference)
    assert cli.main(args) == 0 and "nothing to do" in capsys.readouterr().out
    assert _tree(work / "half.zarr") == after


MOLLIFY = [*BASE[:5], "--method", "mollify", "-o", "n=3", "-o", "eps=0.1", *BASE[11:]]


@pytest.mark.parametrize("args, fragment", [
    (BASE + ["-o", "n=4"], "options.n: 3 -> 4"),
    (BASE + ["-o", "seed=5"], "seed: 0 -> 5"),
    (MOLLIFY, "method: 'smoothgrad' -> 'mollify'"),
    (BASE + ["--target", "label"], "target: 'predicted' -> 'label'"),
    (BASE + ["--limit", "10"], "data.num_examples: 12 -> 10"),
    ([a.replace("fm13_models:make", "fm13_models:slow") for a in BASE], "model.spec: 'fm13_models:make' -> "),
])
def test_changed_setting_is_refused_and_the_store_kept(reference, work, capsys, args, fragment):
    before = _tree(work / "reference.zarr")
    assert cli.main(args + ["--store", "reference.zarr"]) == 2
    line = _error_line(capsys)
    assert fragment in line and "--overwrite" in line
    assert _tree(work / "reference.zarr") == before


def test_other_library_version_is_refused_then_overwritten(work, capsys):
    args = [*BASE, "--store", "version.zarr", "--limit", "4"]
    assert cli.main(args) == 0
    meta_path = work / "version.zarr" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["fastmollify"]["version"] = "0.0.1"
    meta_path.write_text(json.dumps(meta))
    capsys.readouterr()
    before = _tree(work / "version.zarr")
    assert cli.main(args) == 2
    assert "written by fastmollify 0.0.1" in _error_line(capsys)
    assert _tree(work / "version.zarr") == before
    assert cli.main(args + ["--overwrite"]) == 0
    assert fm.open_store(work / "version.zarr").config["version"] == fm.__version__


def test_unreadable_image_is_skipped_and_recorded(reference, work, capsys):
    import shutil

    shutil.copytree(work / "pics", work / "broken")
    (work / "broken" / "class1" / "1.png").write_bytes(b"not a png")  # example 5
    args = [*BASE, "--data", "broken", "--store", "broken.zarr"]
    assert cli.main(args + ["--strict"]) == 2
    assert "example 5 cannot be read" in _error_line(capsys)
    assert cli.main(args) == 0
    assert "1 skipped as unreadable" in capsys.readouterr().out
    s = fm.open_store(work / "broken.zarr")
    assert list(s.skipped) == [5] and "UnidentifiedImageError" in s.skipped[5]
    assert np.isnan(s.maps[5]).all() and s.targets[5] == -1 and s.labels[5] == -1
    keep = np.arange(12) != 5  # the other examples keep their own noise: equal to the full run's maps
    np.testing.assert_array_equal(s.maps[:][keep], reference.maps[:][keep])


@pytest.mark.parametrize("extra, fragment", [
    (["--data", "fm13_data:not_pairs"], "items must be (image tensor [C, H, W], integer label) pairs"),
    (["--data", "fm13_data:mixed_sizes", "--batch-size", "2"], "example 2 has shape [3, 8, 9]"),
    (["--data", "fm13_data:nothing_here"], "has no attribute 'nothing_here'"),
    (["--store", "pics/class0/0.png/maps.zarr"], "cannot write the store"),
    (["--store", "pics"], "is not a fastmollify store"),
    (["-o", "bounds=None"], "needs sigma=... (absolute) or bounds=(lo, hi)"),
    (["-o", "no_such_option=1"], "no_such_option"),
    (["--target", "7"], "target 7 is not a class of a model with 3 outputs"),
])
def test_bad_input_is_one_line_and_exit_2(work, capsys, extra, fragment):
    store = work / f"bad-{hashlib.sha256(repr(extra).encode()).hexdigest()[:8]}.zarr"
    assert cli.main([*BASE, "--store", str(store), *extra]) == 2
    assert fragment in _error_line(capsys)
    if "fm13_data:mixed_sizes" in extra:  # found mid-run: the blocks before it are kept, the store stays valid
        assert fm.open_store(store).done.tolist() == [True, True, False, False]
    else:
        assert not store.exists()


def test_mixed_sizes_with_size_work(work):
    args = [*BASE, "--data", "fm13_data:mixed_sizes", "--size", "8,8", "--store", "sized.zarr", "--overwrite"]
    assert cli.main(args) == 0
    s = fm.open_store(work / "sized.zarr")
    assert s.maps.shape == (4, 3, 8, 8) and s.done.all() and np.isfinite(s.maps[:]).all()


class _Tensors(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_api_stats_float16_channel_sum_and_workers(work):
    import fm13_models

    model = fm13_models.make().eval()
    x = torch.rand(7, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    summary = fm.attribute_dataset(model, _Tensors(x, y), store=work / "api.zarr", method="adaptgrad",
                                   batch_size=3, workers=1, target="label", block=3, map_dtype="float16",
                                   channels_reduce="sum", n=4, bounds=(0, 1), reduce="stats", seed=11,
                                   progress=False)
    assert (summary.examples, summary.computed, summary.already, summary.skipped) == (7, 7, 0, 0)
    want = fm.adaptgrad(model, x, y, n=4, bounds=(0, 1), reduce="stats", seed=11)
    s = fm.open_store(work / "api.zarr")
    assert s.maps.dtype == np.float16 and s.maps.shape == (7, 8, 8) and s.stderr.shape == (7, 3, 8, 8)
    np.testing.assert_allclose(s.maps[:], want.mean.sum(1).half().numpy(), rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(s.stderr[:], want.stderr.numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(s.targets[:], y.numpy())


def test_integrated_gradients_per_example_noise(work):
    """IG's inner noise is example-major (example g, step k: g * steps + k), so batches of 2 give the one-call maps."""
    import fm13_models

    model = fm13_models.make().eval()
    x = torch.rand(5, 3, 8, 8)
    fm.attribute_dataset(model, _Tensors(x, torch.zeros(5)), store=work / "ig.zarr", method="integrated_gradients",
                         batch_size=2, block=2, target=1, inner="smoothgrad", steps=3, n=2, bounds=(0, 1),
                         progress=False, overwrite=True)
    want = fm.integrated_gradients(model, x, 1, inner="smoothgrad", steps=3, n=2, bounds=(0, 1))
    np.testing.assert_allclose(fm.open_store(work / "ig.zarr").maps[:], want.numpy(), rtol=1e-5, atol=1e-7)


def test_layer_maps_take_the_layer_shape(work):
    """With layer= the maps have the layer's output shape, taken from the first example's map."""
    import fm13_models

    model = fm13_models.make().eval()
    x = torch.rand(5, 3, 8, 8)
    fm.attribute_dataset(model, _Tensors(x, torch.zeros(5)), store=work / "layer.zarr", layer="1", n=3, sigma=0.1,
                         block=2, batch_size=2, reduce="stats", channels_reduce="sum", progress=False)
    s = fm.open_store(work / "layer.zarr")
    with torch.no_grad():
        predicted = model(x).argmax(1)
    want = fm.smoothgrad(model, x, predicted, layer="1", n=3, sigma=0.1, reduce="stats")
    assert s.maps.shape == (5, 8, 8) and s.stderr.shape == (5, 4, 8, 8)
    np.testing.assert_allclose(s.maps[:], want.mean.sum(1).numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(s.stderr[:], want.stderr.numpy(), rtol=1e-5, atol=1e-7)


def test_show_renders_an_overlay(reference, work, capsys):
    assert cli.main(["show", "reference.zarr", "--index", "7", "--out", "seven.png"]) == 0
    assert (work / "seven.png").stat().st_size > 1000
    assert cli.main(["show", "reference.zarr", "--index", "12"]) == 2
    assert "outside the store's 12 examples" in _error_line(capsys)


def test_xarray_reads_the_store_lazily(reference, space):
    import xarray as xr  # with dask: installed by run.sh, so CI reads the store as the README shows
    ds = xr.open_zarr(space / "reference.zarr", consolidated=False)
    assert ds["maps"].dims == ("example", "channel", "y", "x")
    np.testing.assert_array_equal(ds["maps"].isel(example=3).values, reference.maps[3])


def test_benchmark_runs_at_tiny_size(tmp_path):
    out = subprocess.run([PY, str(ROOT / "benchmarks" / "bench_dataset.py"), "--tiny", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "dataset_cpu.json").read_text())
    rows = {r["contender"]: r for r in result["rows"]}
    assert set(rows) == {"engine", "pipeline-1", "pipeline-2"}
    for row in rows.values():
        assert row["images_per_s"] > 0 and row["examples"] == result["examples"]
    assert 0 < result["scaling_efficiency"] and (tmp_path / "dataset_cpu.png").stat().st_size > 0
