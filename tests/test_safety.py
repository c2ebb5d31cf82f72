"""Bad input gets a clear error naming the argument; the model is never changed or lost."""
import pytest
import torch

import fastmollify as fm


def make_model():
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    model[0].weight.requires_grad_(False)  # a mixed set of flags must come back as it was
    return model.eval()


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, [p.requires_grad for p in model.parameters()],
            [m.training for m in model.modules()])


def assert_unchanged(model, snap):
    state, flags, modes = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == modes


X = torch.rand(4, 6)

BAD_CALLS = [
    (lambda m: fm.smoothgrad(m, X.long(), 0), TypeError, "floating dtype"),
    (lambda m: fm.smoothgrad(m, X.masked_fill(X > 0.5, float("nan")), 0), ValueError, "NaN or Inf"),
    (lambda m: fm.smoothgrad(m, [X], 0, n=0), ValueError, "n must be an integer >= 1"),
    (lambda m: fm.smoothgrad(m, X, 0, chunk_size=0), ValueError, "chunk_size"),
    (lambda m: fm.mollify(m, X, 0, eps=0.0), ValueError, "eps must be"),
    (lambda m: fm.mollify(m, X, 0, eps=-1.0), ValueError, "eps must be"),
    (lambda m: fm.mollify(m, X, 0), ValueError, "eps=... .* r=..."),
    (lambda m: fm.mollify(m, X, 0, r=0.1, alpha=1.5), ValueError, "alpha must be"),
    (lambda m: fm.mollify(m, X, 0, kernel="gauss", eps=0.1), ValueError, "unknown kernel 'gauss'"),
    (lambda m: fm.adaptgrad(m, X, 0, c=1.0, bounds=(0, 1)), ValueError, "c must be"),
    (lambda m: fm.adaptgrad(m, X, 0, c=0, bounds=(0, 1)), ValueError, "c must be"),
    (lambda m: fm.adaptgrad(m, X, 0, bounds=(1, 0)), ValueError, "lo must be < hi"),
    (lambda m: fm.adaptgrad(m, X, 0, bounds=(0.2, 0.8)), ValueError, "outside bounds"),
    (lambda m: fm.clipgrad(m, X, 0, bounds=(0.5, 2.0)), ValueError, "outside bounds"),
    (lambda m: fm.adaptgrad(m, X, 0, bounds=(torch.zeros(6), torch.ones(6).index_fill(0, torch.tensor([3]), 0.01))),
     ValueError, "outside bounds"),
    (lambda m: fm.smoothgrad(m, X, 0, bounds=(torch.zeros(5), 1.0)), ValueError, "does not broadcast"),
    (lambda m: fm.smoothgrad(m, torch.ones(4, 6), 0), ValueError, "constant"),
    (lambda m: fm.smoothgrad(m, X, 3), ValueError, "target 3 is out of range"),
    (lambda m: fm.smoothgrad(m, X, -1), ValueError, "target must be >= 0"),
    (lambda m: fm.smoothgrad(m, X, [0, 1]), ValueError, "2 entries for a batch of 4"),
    (lambda m: fm.smoothgrad(m, X, 0.5), TypeError, "target"),
    (lambda m: fm.smoothgrad(m, X), ValueError, "pass target="),
    (lambda m: fm.smoothgrad(lambda t: m(t)[:, 0], X, 1), ValueError, "pass target=None"),
    (lambda m: fm.smoothgrad(lambda t: m(t)[:2], X, 0), ValueError, "returned shape"),
    (lambda m: fm.smoothgrad(lambda t: "no", X, 0), TypeError, "must return a tensor"),
    (lambda m: fm.smoothgrad(m, X.to("meta"), 0), ValueError, "move one of them"),
    (lambda m: fm.smoothgrad(m, X, 0, backend="fastest"), ValueError, "unknown backend 'fastest'"),
    (lambda m: fm.smoothgrad(m, X, 0, reduce="median"), ValueError, "reduce must be one of"),
    (lambda m: fm.smoothgrad(m, X, 0, output="prob"), ValueError, "output must be one of"),
    (lambda m: fm.smoothgrad(m, X, 0, seed=-3), ValueError, "seed"),
    (lambda m: fm.smoothgrad(m, X, 0, noise_level=0), ValueError, "noise_level"),
    (lambda m: fm.noisegrad(m, X, 0, m=0), ValueError, "m must be"),
    (lambda m: fm.noisegrad(lambda t: m(t), X, 0), TypeError, "nn.Module"),
    (lambda m: fm.smoothgrad(m, (X, X[:2]), 0), ValueError, "share the batch size"),
    (lambda m: fm.smoothgrad(m, X, 0, bogus=1), TypeError, "bogus"),
    (lambda m: fm.Explainer(m, method="saliency"), ValueError, "unknown method"),
]


ASYMMETRIC_TAIL = dict(density=lambda t: torch.exp(-t.abs()) / 2,  # Laplace, but skewed below u = 0.005
                       inverse_cdf=lambda u: torch.where(u < 0.5, torch.log(2 * u), -torch.log(2 - 2 * u))
                       * torch.where(u < 0.005, 1.5, 1.0))

BAD_CALLS += [  # refused before the model is called (the model is wrapped to count calls)
    (lambda m: fm.smoothgrad(m, X.double(), 0), TypeError, r"inputs has dtype torch.float64 .*model.to\(torch.float64\)"),
    (lambda m: fm.smoothgrad(m, X, 0, nt_samples=5), TypeError, r"'nt_samples' is Captum's name: fm.Explainer"),
    (lambda m: fm.noisegrad(m, X, 0, n=5), TypeError, r"unknown option 'n' \('n' is an option of smoothgrad"),
    (lambda m: fm.gradient(m, X, 0, n=5), TypeError, "unknown option 'n'"),
    (lambda m: fm.mollify(m, X, 0, eps=0.1, alpha=0.9), ValueError, "alpha .* ignored"),
    (lambda m: fm.smoothgrad(m, X, 0, sigma=0.1, noise_level=0.2), ValueError, "sigma .* noise_level"),
    (lambda m: fm.smoothgrad(m, X, 0, sigma=0.1, bounds=(0, 1)), ValueError, "bounds .* sigma"),
    (lambda m: fm.smoothgrad(m, X, "3"), TypeError, "target must be"),
    (lambda m: fm.smoothgrad(m, X, 1.0), TypeError, "target must"),
    (lambda m: fm.smoothgrad(m, X, ["a", "b", "c", "d"]), TypeError, "target must be"),
    (lambda m: fm.smoothgrad(m, X, 0, bounds=(None, 1)), TypeError, "bounds lo must be a number"),
    (lambda m: fm.adaptgrad(m, X, 0, bounds=(0, "one")), TypeError, "bounds hi must be a number"),
    (lambda m: fm.smoothgrad(m, X, 0, example_offset=2**32 - 3), ValueError, "example_offset=.*2\\*\\*32"),
    (lambda m: fm.smoothgrad(m, X, 0, example_offset=-1), ValueError, "example_offset"),
    (lambda m: fm.fusiongrad(m, X, 0, m=2**17, n=2**16), ValueError, "n \\* m"),
    (lambda m: fm.smoothgrad(m, X, 0, abs="yes"), TypeError, "abs must be True or False"),
    (lambda m: fm.adaptgrad(m, X, 0, bounds=(0, 1), include_clean=1), TypeError, "include_clean must be"),
    (lambda m: fm.smoothgrad(m, X, 0, progress="no"), TypeError, "progress must be True or False"),
    (lambda m: fm.noisegrad(m, X, 0, params=[]), ValueError, "params is empty"),
    (lambda m: fm.noisegrad(m, X, 0, params="0.weight"), TypeError, "params must be a list"),
    (lambda m: fm.integrated_gradients(m, X, 0, steps=2.7), ValueError, "steps must be an integer"),
    (lambda m: fm.integrated_gradients(m, X, 0, steps="16"), ValueError, "steps must be an integer"),
    (lambda m: fm.integrated_gradients(m, X, 0, baseline=torch.zeros(5)), ValueError, "baseline has shape"),
    (lambda m: fm.integrated_gradients(m, X, 0, baseline="zero"), TypeError, "baseline must be"),
    (lambda m: fm.integrated_gradients(m, X, 0, inner="smoothgrad", m=3), TypeError, "unknown option 'm'"),
    (lambda m: fm.integrated_gradients(m, X, [0, 1]), ValueError, "2 entries for a batch of 4"),
    (lambda m: fm.kernels.register("skewed", **ASYMMETRIC_TAIL), ValueError, "must be symmetric"),
]
CALLED = [  # refused at the first model call, before any gradient
    (lambda m: fm.smoothgrad(lambda t: m(t)[:, :1], X, 0, output="softmax"), ValueError, "softmax is constant"),
    (lambda m: fm.smoothgrad(lambda t: m(t.detach()), X, 0), ValueError, "does not depend on inputs"),
    (lambda m: fm.smoothgrad(lambda t: m(torch.zeros_like(t)), X, 0), ValueError, "does not depend on inputs"),
    (lambda m: fm.smoothgrad(lambda t: _in_inference_mode(m, t), X, 0), ValueError, "does not depend on inputs"),
    (lambda m: fm.smoothgrad(lambda t: m(t)[:2], X, 0, n=5), ValueError, r"returned shape \(2, 3\) for a batch of B = 4"),
    (lambda m: fm.integrated_gradients(lambda t: m(t)[:2], X, 0, steps=3), ValueError, r"B = 4 \(x 3 path steps\)"),
]

CALLED += [c for c in BAD_CALLS if any(k in c[2] for k in ("out of range", "pass target=", "returned shape",
                                                            "must return a tensor"))]  # need the output's shape
BEFORE_CALL = [c for c in BAD_CALLS if c not in CALLED]


def _in_inference_mode(model, t):
    with torch.inference_mode():
        return model(t)


@pytest.mark.parametrize("call,error,message", BEFORE_CALL + CALLED)
def test_bad_input_is_refused_clearly_and_changes_nothing(call, error, message):
    model = make_model()
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(1))
    snap = snapshot(model)
    with pytest.raises(error, match=message) as raised:
        call(model)
    assert "_explain" not in str(raised.value) and "_run" not in str(raised.value)
    assert_unchanged(model, snap)
    if (call, error, message) in BEFORE_CALL:
        assert not calls, "refused only after calling the model"


def test_refused_under_inference_mode():
    with torch.inference_mode(), pytest.raises(ValueError, match="outside torch.inference_mode"):
        fm.smoothgrad(make_model(), X, 0)


def test_tensor_valued_scalars_are_numbers():
    model = make_model()
    given = dict(n=torch.tensor(7), noise_level=torch.tensor(0.25, dtype=torch.float64), seed=torch.tensor(3))
    assert torch.equal(fm.smoothgrad(model, X, 0, **given), fm.smoothgrad(model, X, 0, n=7, noise_level=0.25, seed=3))


def test_one_sample_has_an_undefined_standard_error():
    stats = fm.smoothgrad(make_model(), X, 0, n=1, reduce="stats")
    assert torch.isnan(stats.stderr).all() and torch.isnan(stats.var).all()
    assert torch.equal(stats.vargrad, torch.zeros_like(stats.mean))  # the population variance of one sample


class Exploding(torch.nn.Module):
    """Raises ``error`` on forward call number ``at``."""

    def __init__(self, at, error):
        super().__init__()
        self.net, self.calls, self.at, self.error = make_model(), 0, at, error
        self.norm = torch.nn.BatchNorm1d(3)

    def forward(self, t):
        self.calls += 1
        if self.calls == self.at:
            raise self.error
        return self.norm(self.net(t))


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
@pytest.mark.parametrize("method", ["noisegrad", "fusiongrad", "smoothgrad"])
def test_weights_restored_after_an_error_mid_run(error, method):
    model = Exploding(at=3, error=error)
    model.train()  # train mode: the batch-norm buffers would move; they must come back too
    snap = snapshot(model)
    with pytest.warns(UserWarning, match="train mode"), pytest.raises(type(error)):
        getattr(fm, method)(model, X, 0, chunk_size=1, **({} if method == "noisegrad" else {"n": 5}))
    assert model.calls == 3
    assert_unchanged(model, snap)


def test_weights_restored_after_a_normal_noisegrad_run():
    model = make_model()
    snap = snapshot(model)
    fm.fusiongrad(model, X, 1, m=3, n=2)
    assert_unchanged(model, snap)


def test_weight_noise_never_writes_the_clean_weights():
    model = make_model()
    original = [p.data for p in model.parameters()]  # aliases of the clean storage
    saved = [t.clone() for t in original]
    seen = []

    def check(module, args, out):  # during the call: the layer computes with noisy weights, the clean stay clean
        seen.append(not torch.equal(module.weight, saved[0]))
        assert all(torch.equal(a, b) for a, b in zip(original, saved))

    handle = model[0].register_forward_hook(check)
    try:
        fm.noisegrad(model, X, 1, m=3)
    finally:
        handle.remove()
    assert seen == [True] * 3
    assert all(p.data_ptr() == t.data_ptr() for p, t in zip(model.parameters(), original))


def test_tied_weights_share_one_draw_and_come_back():
    model = torch.nn.Sequential(torch.nn.Linear(6, 6, bias=False), torch.nn.Tanh(), torch.nn.Linear(6, 6, bias=False))
    model[2].weight = model[0].weight
    snap = snapshot(model)
    tied = []
    handle = model[2].register_forward_pre_hook(lambda module, args: tied.append(
        model[0].weight is model[2].weight and not torch.equal(model[2].weight, snap[0]["0.weight"])))
    try:
        fm.noisegrad(model, X, 1, m=2)
    finally:
        handle.remove()
    assert tied == [True, True]
    assert_unchanged(model, snap)


def test_out_of_memory_halves_the_chunk_and_gives_the_same_map():
    base = make_model()

    def tight(t):  # "runs out of memory" above 8 rows, like a GPU would
        if t.shape[0] > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return base(t)

    expected = fm.smoothgrad(base, X, 1, n=10, chunk_size=2)
    got = fm.smoothgrad(tight, X, 1, n=10, chunk_size=10)
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_an_ordinary_error_is_not_mistaken_for_out_of_memory():
    def broken(t):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        fm.smoothgrad(broken, X, 1, n=10, chunk_size=10)


def test_backend_asked_for_by_name_explains_why_it_cannot_serve():
    with pytest.raises(RuntimeError, match="backend 'cuda' cannot serve .* on cpu"):
        fm.smoothgrad(make_model(), X, 0, backend="cuda")
    assert fm.availability("cpu")["reference"] is None


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_huge_finite_inputs_are_not_mistaken_for_inf(dtype):
    """The finiteness check sums first; a sum that overflows must not refuse finite inputs."""
    from fastmollify import checks

    huge = torch.full((2, 3), torch.finfo(dtype).max, dtype=dtype)
    assert checks.inputs_tuple(huge)[0][0] is huge
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="NaN or Inf"):
            checks.inputs_tuple(huge.index_fill(1, torch.tensor([2]), bad))
