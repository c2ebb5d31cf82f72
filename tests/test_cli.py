"""The command line: subcommands, outputs, and one-line errors for bad input."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from fastmollify import __main__ as cli
from fastmollify import models

TINY_MODEL = textwrap.dedent("""
    import torch

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                                   torch.nn.Linear(4 * 8 * 8, 3))
""")


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("fastmollify: error: ")
    return err[0]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    from PIL import Image

    (tmp_path / "tinymodel.py").write_text(TINY_MODEL)
    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(pics / f"{name}.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASTMOLLIFY_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("command", ["demo", "attribute", "evaluate", "check", "bench"])
def test_help_for_each_subcommand(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: fastmollify {command}" in capsys.readouterr().out


def test_attribute_writes_overlays_and_raw_maps(workdir):
    from PIL import Image

    assert cli.main(["attribute", "--model", "tinymodel:make", "--images", "pics", "--method", "gradient",
                     "--target", "2", "--out", "out", "--quiet"]) == 0
    for name in ("a", "b"):
        assert (workdir / "out" / f"{name}.png").stat().st_size > 0
        saved = np.load(workdir / "out" / f"{name}.npy")
        # the raw map is the plain input gradient of class 2 (computed here with autograd)
        import tinymodel

        model = tinymodel.make().eval()
        x = torch.tensor(np.asarray(Image.open(workdir / "pics" / f"{name}.png").convert("RGB")) / 255.0,
                         dtype=torch.float32).permute(2, 0, 1)[None].requires_grad_(True)
        (grad,) = torch.autograd.grad(model(x)[0, 2], x)
        np.testing.assert_allclose(saved, grad[0].numpy(), rtol=1e-5, atol=1e-7)


def test_attribute_with_options_and_composition(workdir):
    assert cli.main(["attribute", "--model", "tinymodel:make", "--images", "pics/a.png", "--method",
                     "integrated_gradients", "-o", "inner=adaptgrad", "-o", "n=2", "-o", "steps=2",
                     "-o", "bounds=(0, 1)", "--out", "o2", "--quiet", "--absolute"]) == 0
    assert np.load(workdir / "o2" / "a.npy").shape == (3, 8, 8)


@pytest.mark.parametrize("args, fragment", [
    (["--model", "no_such_module:make"], "cannot import module 'no_such_module'"),
    (["--model", "tinymodel:nothing"], "no attribute 'nothing'"),
    (["--model", "tinymodel"], "module:callable"),
    (["--model", "tinymodel:make", "--method", "magic"], "unknown method 'magic'"),
    (["--model", "tinymodel:make", "-o", "bogus=1"], "-o: smoothgrad got an unknown option 'bogus'"),
    (["--model", "tinymodel:make", "--method", "noisegrad", "-o", "n=3"], "unknown option 'n'"),
    (["--model", "tinymodel:make", "--method", "integrated_gradients", "-o", "inner=adaptgrad", "-o", "m=3"],
     "adaptgrad got an unknown option 'm'"),
    (["--model", "tinymodel:make", "-o", "reduce=stats"], "-o reduce=stats: this command writes maps"),
    (["--model", "tinymodel:make", "--mean", "0.5,0.5"], "--mean has 2 values for 3-channel images"),
    (["--model", "tinymodel:make", "--std", "0.2,0,0.2"], "--std has a zero"),
    (["--model", "tinymodel:make", "-o", "n=0"], "n"),
    (["--model", "tinymodel:make", "--images", "missing"], "no such file or folder"),
])
def test_attribute_bad_input_is_one_line(workdir, capsys, args, fragment):
    full = ["attribute", "--images", "pics", "--out", "out", "--quiet"] + args
    assert cli.main(full) == 2
    assert fragment in _error_line(capsys)


def test_unreadable_image(workdir, capsys):
    (workdir / "pics" / "broken.png").write_bytes(b"not a png at all")
    assert cli.main(["attribute", "--model", "tinymodel:make", "--images", "pics", "--quiet"]) == 2
    assert "cannot read image" in _error_line(capsys)


def test_no_traceback_wall_from_a_real_process(workdir):
    result = subprocess.run([sys.executable, "-m", "fastmollify", "attribute", "--model", "nope.nothing:x",
                             "--images", "pics"], capture_output=True, text=True, cwd=workdir)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]


def test_demo_prints_the_table_and_writes_the_grid(workdir, capsys, monkeypatch):
    # an untrained model keeps the test fast; the real demo trains (cached) first
    monkeypatch.setattr(models, "shapes_model", lambda **kwargs: models.demo_cnn().eval())
    assert cli.main(["demo", "--images", "2", "-n", "4", "--out", "d"]) == 0
    out = capsys.readouterr().out
    assert (workdir / "d" / "demo.png").stat().st_size > 0
    for method in ("gradient", "smoothgrad", "clipgrad", "adaptgrad", "noisegrad", "fusiongrad", "mollify poisson",
                   "IG + adaptgrad"):
        assert method in out
    assert "mean std. error" in out


def test_no_subcommand_runs_the_demo(monkeypatch):
    called = []
    monkeypatch.setattr(cli, "demo", lambda args: called.append(args.out) or 0)
    assert cli.main([]) == 0
    assert called == ["fastmollify-out"]


def test_check_reports_every_backend(capsys):
    assert cli.main(["check"]) == 0
    out = capsys.readouterr().out
    for name in ("reference", "cpu", "cuda", "triton"):
        assert name in out


def test_check_fails_on_a_disagreeing_backend(capsys, monkeypatch):
    from fastmollify.ops import dispatch, reference

    class Broken:
        name = "cpu"

        def perturb(self, x, out, lo, hi, **kwargs):
            reference.perturb(x, out, lo, hi, **kwargs)
            out.add_(1e-2)

        accumulate = staticmethod(reference.accumulate)
        perturb_weights = staticmethod(reference.perturb_weights)

    real_load = dispatch.load
    monkeypatch.setattr(dispatch, "availability", lambda device="cpu", dtype=None: {"reference": None, "cpu": None})
    monkeypatch.setattr(dispatch, "load", lambda name: Broken() if name == "cpu" else real_load(name))
    assert cli.main(["check"]) == 1
    captured = capsys.readouterr()
    assert "DISAGREES" in captured.out and "cpu on cpu" in captured.err


def test_bench_runs_the_suite_or_says_it_is_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "SOURCE_ROOT", tmp_path)
    assert cli.main(["bench"]) == 2
    assert "cpu_suite.py not found" in _error_line(capsys)
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "cpu_suite.py").write_text(
        "import sys, pathlib\npathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))\n")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert cli.main(["bench", str(tmp_path / "ran.txt"), "--quick", "--out", "x"]) == 0
    assert (tmp_path / "ran.txt").read_text() == "--quick --out x"
    (tmp_path / "benchmarks" / "cpu_suite.py").write_text("import sys\nsys.exit(3)\n")
    assert cli.main(["bench"]) == 3  # the suite's exit status is ours


def test_evaluate_quick_writes_tables_and_plots(workdir):
    assert cli.main(["evaluate", "--quick", "--out", "ev"]) == 0
    for name in ("paper1_kernels.md", "paper2_methods.md", "nsweep.md", "claims.md", "nsweep_stderr.png",
                 "nsweep_relative.png", "examples_shapes.png", "examples_digits.png", "results.json"):
        assert (workdir / "ev" / name).stat().st_size > 0, name
    table = (workdir / "ev" / "paper2_methods.md").read_text()
    for row in ("| Grad |", "| SmoothGrad |", "| ClipGrad |", "| AdaptGrad c=0.95 |", "| AdaptGrad c=0.999 |",
                "| NoiseGrad |", "| FusionGrad |", "| IG + AdaptGrad |", "| G×I + SmoothGrad |"):
        assert row in table
    kernels = (workdir / "ev" / "paper1_kernels.md").read_text()
    for kernel in ("gaussian", "poisson", "hyperbolic", "sigmoid", "rectangular"):
        assert f"| {kernel} (r=" in kernels
