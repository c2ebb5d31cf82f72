"""Smoke test of the benchmarks: every script runs at tiny sizes and writes sane rows.

Timings are not checked against any target here (they are measured and reported by the suites);
this only keeps the scripts from rotting: they run, the rows have every field, the numbers are
finite and positive, the ratios to the floor are attached, and the summary renders.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastmollify import engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import (  # noqa: E402
    bench_convergence, bench_memory, bench_scaling, bench_small, bench_throughput, contenders, fresh_process, memory,
    peers, ratios, results_io, runner, summary, timing, zoo)

SCRIPTS = {"scaling": bench_scaling, "small": bench_small, "throughput": bench_throughput}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
OPS = ROOT / "benchmarks" / "bench_ops.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rows = {}
    threads = torch.get_num_threads()
    try:
        for name, module in SCRIPTS.items():  # one thread: cheap and steady on a shared CPU
            args = ["--tiny", "--device", DEVICE, "--out", str(out), "--quiet", "--threads", "1"]
            if name != "scaling":
                args.append("--no-plot")
            rows[name] = module.main(args)
        if OPS.exists():  # the op-bandwidth script (its rows are folded into the summary)
            from benchmarks import bench_ops

            bench_ops.main(["--quick", "--device", DEVICE, "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    return out, rows


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_script_rows(results, name):
    out, returned = results
    path = out / f"{name}_{results_io.device_tag(DEVICE)}.json"
    rows = json.loads(path.read_text())
    assert rows and len(rows) == len(returned[name])
    assert path.with_suffix(".csv").read_text().splitlines()[0].split(",") == list(runner.ROW_FIELDS)
    for row in rows:
        assert set(runner.ROW_FIELDS) <= set(row), set(runner.ROW_FIELDS) - set(row)
        assert row["error"] is None, (row["label"], row["method"], row["error"])
        assert row["device"] and row["device_type"] == torch.device(DEVICE).type
        assert row["B"] >= 1 and row["N"] >= 1 and row["chunk"] >= 1 and row["repeats"] >= 1
        for key in ("median_s", "p25_s", "p75_s", "min_s", "max_s", "throughput"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["throughput"] == pytest.approx(row["B"] * row["N"] / row["median_s"])
        if row["peak_mem_bytes"] is not None:
            assert 0 <= row["peak_mem_bytes"] < 64 << 30
        if row["impl"] != "floor" and row["method"] != "weight_writes":
            assert row["ratio_to_floor"] is not None and row["ratio_to_floor"] > 0, row
    impls = {row["impl"] for row in rows}
    assert {"floor", "fastmollify", "captum", "plain"} <= impls
    if name == "throughput":
        assert "authors" in impls
        assert {row["method"] for row in rows} >= set(contenders.INPUT_METHODS) | set(contenders.WEIGHT_METHODS)
    if name == "scaling":
        assert (out / f"scaling_{results_io.device_tag(DEVICE)}.png").stat().st_size > 0
        backends = {row["backend"] for row in rows if row["impl"] == "fastmollify"}
        assert backends == set(contenders.available_backends(DEVICE))


def test_summary_renders(results):
    out, _ = results
    text = summary.render(out, results_io.device_tag(DEVICE))
    for title in ("N-scaling", "Small models", "ImageNet-size throughput", "Targets") + (
            ("Op bandwidth",) if OPS.exists() else ()):
        assert title in text
    assert "| --- |" not in text and "|---|" in summary.render(out, results_io.device_tag(DEVICE), markdown=True)


def test_peers_compute_the_same_map():
    """The baselines explain what fastmollify explains: at tiny noise all agree with the plain gradient."""
    import fastmollify as fm

    torch.manual_seed(0)
    model = zoo.MLP().eval()
    x, target = torch.rand(3, 1, 28, 28), torch.tensor([1, 2, 3])
    grad = peers.saliency(model, x, target)
    plain = peers.plain_smoothgrad(model, x, target, n=4, chunk=3, sigma=1e-6)
    ours = fm.smoothgrad(model, x, target, n=4, sigma=1e-6, progress=False)
    torch.testing.assert_close(plain, grad, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ours, grad, rtol=1e-3, atol=1e-5)
    authors = peers.AuthorsNoiseGrad(model, std=1e-7, n=2)
    before = [p.clone() for p in model.parameters()]
    torch.testing.assert_close(authors.enhance_explanation(x, target, peers.saliency), grad, rtol=1e-3, atol=1e-5)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.skipif(sys.platform != "linux", reason="the fresh-process comparison reads Linux RSS")
def test_cpu_peak_memory_counts_the_tensors():
    """The CPU memory method: the profiler's peak of live tensor bytes sees the chunk buffer, repeatably,
    and a fresh process measures the same."""
    setup = zoo.Setup(zoo.SetupSpec("mlp", 64, "cpu"))
    case = contenders.Case("floor", "floor", n=40, chunk=40)
    buffer = 40 * 64 * 784 * 4  # the noisy-input buffer the floor fills, as every contender must
    first = timing.measure(setup, case, repeats=1)
    again = timing.measure(setup, case, repeats=1)
    assert first.error is None and first.mem_method == memory.CPU_MEM_METHOD
    assert buffer <= first.peak < 4 * buffer
    assert again.peak == first.peak
    fresh = fresh_process.measure_in_subprocess(setup.spec, case, repeats=1)
    assert fresh.error is None and fresh.peak == first.peak and fresh.peak_rss is not None


@pytest.mark.skipif(sys.platform != "linux", reason="bench_memory forks and reads Linux's peak RSS")
def test_memory_benchmark_quick(tmp_path):
    """Peak memory vs n: every call measured in its own process, the engine's chunk observed, the table rendered."""
    rows = bench_memory.main(["--quick", "--out", str(tmp_path), "--quiet"])
    assert [row["n"] for row in rows] == list(bench_memory.QUICK["ns"])
    assert (tmp_path / "memory_cpu.csv").read_text().splitlines()[0].split(",") == list(bench_memory.FIELDS)
    for row in rows:
        assert row["error"] is None, row["error"]
        assert 0 <= row["peak_rss_bytes"] < 4 << 30 and row["baseline_rss_bytes"] > 0
        assert 1 <= row["chunk"] <= row["n"] and row["forwards"] >= -(-row["n"] // row["chunk"])
    assert (tmp_path / "memory_cpu.png").stat().st_size > 0
    text = summary.render(tmp_path, "cpu")
    assert "Peak memory vs n" in text and "peak memory flat in n, default chunk" in text


def test_convergence_benchmark_quick(tmp_path):
    """tol sample counts against the fixed-n ladder, antithetic efficiency; the tables rendered."""
    rows = bench_convergence.main(["--quick", "--out", str(tmp_path), "--quiet"])
    assert (tmp_path / "convergence_cpu.csv").read_text().splitlines()[0].split(",") == list(bench_convergence.FIELDS)
    tol = [r for r in rows if r["part"] == "tol"]
    anti = [r for r in rows if r["part"] == "antithetic"]
    assert {r["method"] for r in tol} == set(bench_convergence.QUICK_METHODS) and len(anti) == 8
    for row in tol:
        assert row["error"] is None or "did not reach" in row["error"], row["error"]
        assert 1 <= row["n_mean"] <= row["n_max"] <= row["cap_samples"] and 0 <= row["reached"] <= 1
        assert row["units_max"] >= engine.MIN_UNITS and row["t_tol_s"] > 0 and row["hindsight_saving"] >= 1
        if row["reached"] == 1 and row["n_fixed"] is not None:  # the fixed n reaches tol for every example too
            assert row["worst_rel_err"] <= row["tol"] and row["worst_rel_err_fixed"] <= row["tol"]
            assert row["time_saving"] > 0 and row["sample_saving"] > 0
    for row in anti:
        assert row["error"] is None, row["error"]
        assert row["var_plain"] > 0 and row["var_anti"] > 0 and row["efficiency"] > 0
        assert row["efficiency"] == pytest.approx(row["var_ratio"] * row["time_ratio"])
    assert all(r["var_ratio_seeds"] > 0 for r in anti if r["seeds"])
    assert (tmp_path / "convergence_cpu.png").stat().st_size > 0
    text = summary.render(tmp_path, "cpu")
    assert "Samples for a relative error" in text and "Antithetic pairs" in text


def test_gpu_suite_script_parses():
    subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_suite.sh")], check=True)


def test_sanitize_ops_dry_run_and_what_it_catches(monkeypatch, capsys):
    from benchmarks import sanitize_ops
    from fastmollify.ops import dispatch

    assert sanitize_ops.main(["--device", "cpu"]) == 0
    cpu = dispatch.load("cpu")

    class SkipsLastElement:  # the cpu backend, but perturb leaves each row's last element unwritten (NaN)
        def __getattr__(self, name):
            return getattr(cpu, name)

        def perturb(self, x, out, lo, hi, **kwargs):
            if x.shape[-1] > 1:
                cpu.perturb(x[..., :-1].contiguous(), out[..., :-1], lo[:-1], hi[:-1], **kwargs)

    monkeypatch.setattr(sanitize_ops.dispatch, "load", lambda name: SkipsLastElement())
    assert sanitize_ops.main(["--device", "cpu"]) == 1
    assert "perturb torch.float32 gaussian B=1 D=1" in capsys.readouterr().out


def test_bench_ops_times_the_ops_asked_for(tmp_path, capsys):
    from benchmarks import bench_ops

    bench_ops.main(["--quick", "--device", "cpu", "--kernel", "sigmoid", "--ops", "perturb", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "ops_cpu.json").read_text())
    assert {(r["op"], r["kernel"]) for r in rows} == {("perturb", "sigmoid")}
    assert {r["backend"] for r in rows} >= {"reference", "cpu"}
    with pytest.raises(SystemExit) as exit_info:
        bench_ops.main(["--quick", "--ops", "perturb,scatter"])
    assert exit_info.value.code == 2 and "--ops: unknown op(s) scatter" in capsys.readouterr().err


def _row(impl, method, times, group, backend="cpu", n=10, m=0, chunk=5):
    return {"script": "small", "device": "cpu", "model": "mlp", "dtype": "fp32", "channels_last": False,
            "image": 28, "B": 8, "impl": impl, "method": method, "backend": backend, "n": n, "m": m, "chunk": chunk,
            "times_s": times, "group": group, "median_s": sorted(times)[len(times) // 2], "min_s": min(times),
            "peak_mem_bytes": None, "weights_bytes": 0}


def test_ratios_pair_calls_of_the_same_round():
    """A load spike that hits both calls of a round cancels in the paired ratio; it does not across groups."""
    floor = _row("floor", "floor", [1.0, 3.0, 1.0], "g1")
    ours = _row("fastmollify", "smoothgrad", [1.1, 3.3, 1.1], "g1")
    other_floor = _row("floor", "floor", [0.5, 0.5, 0.5], "g0")  # an earlier pass: not the one to pair with
    ratios.attach_ratios([other_floor, floor, ours])
    assert ours["ratio_kind"] == "paired" and ours["ratio_to_floor"] == pytest.approx(1.1)
    assert ours["floor_s"] == 1.0 and ours["ratio_of_mins"] == pytest.approx(1.1)
    alone = _row("fastmollify", "smoothgrad", [1.2, 1.2, 9.0], "g2")
    ratios.attach_ratios([floor, alone])
    assert alone["ratio_kind"] == "medians" and alone["ratio_to_floor"] == pytest.approx(1.2)


def test_weight_noise_ratio_adds_the_weight_writes_of_each_round():
    floor = _row("floor", "floor-noisegrad", [1.0, 2.0, 1.0], "g", backend="floor", n=1, m=2, chunk=1)
    writes = _row("fastmollify", "weight_writes", [0.5, 1.0, 0.5], "g", n=1, m=2, chunk=1)
    ours = _row("fastmollify", "noisegrad", [1.5, 3.3, 1.65], "g", n=1, m=2, chunk=1)
    ratios.attach_ratios([floor, writes, ours])
    assert ours["ratio_to_floor"] == pytest.approx(1.1)  # median of 1.0, 1.1, 1.1
    assert [r["method"] for r in ratios.without_repeated_floors([floor, writes, floor, ours])] == [
        "floor-noisegrad", "weight_writes", "noisegrad"]


def test_a_speedup_below_one_is_a_tie_only_when_its_rounds_straddle_one():
    ours = _row("fastmollify", "smoothgrad", [1.0] * 5, "g")
    straddles = _row("captum", "smoothgrad", [0.96, 0.97, 0.98, 1.01, 1.02], "g")
    below = _row("captum", "smoothgrad", [0.97, 0.98, 0.99, 0.99, 0.99], "g")
    assert summary.at_least(summary.speedup(straddles, ours), 1, straddles, ours) == "tie"
    assert summary.at_least(summary.speedup(below, ours), 1, below, ours) == "NO"
    assert summary.at_least(1.2, 1, below, ours) == "yes"
