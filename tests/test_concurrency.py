"""Threads sharing one model, and buffers in any mode: every call as if alone, nothing changed after."""
import threading
import time
import warnings

import pytest
import torch

import fastmollify as fm

X = torch.rand(3, 6)


class Slow(torch.nn.Module):
    """An MLP with a mixed set of requires_grad flags whose forward sleeps (releases the GIL), so
    calls from several threads interleave inside the model."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
        self.net[0].bias.requires_grad_(False)

    def forward(self, t):
        time.sleep(0.002)
        return self.net(t)


CALLS = {
    "smoothgrad": lambda m, seed: fm.smoothgrad(m, X, 1, n=6, chunk_size=2, seed=seed),
    "adaptgrad": lambda m, seed: fm.adaptgrad(m, X, 2, n=5, chunk_size=2, bounds=(0, 1), seed=seed),
    "mollify": lambda m, seed: fm.mollify(m, X, 0, kernel="poisson", eps=0.1, n=4, chunk_size=3, seed=seed),
    "noisegrad": lambda m, seed: fm.noisegrad(m, X, 3, m=4, seed=seed),
    "fusiongrad": lambda m, seed: fm.fusiongrad(m, X, 1, m=3, n=2, seed=seed),
    "gradient": lambda m, seed: fm.gradient(m, X, 0),
}


def state(model):
    return ([p.detach().clone() for p in model.parameters()], [p.data_ptr() for p in model.parameters()],
            [p.requires_grad for p in model.parameters()])


def test_many_threads_with_mixed_methods_on_one_model_as_if_alone():
    model = Slow().eval()
    jobs = [(name, seed) for seed in range(3) for name in CALLS]  # 18 calls, weight and input noise mixed
    alone = {job: CALLS[job[0]](model, job[1]) for job in jobs}
    before = state(model)
    for _ in range(3):  # repeated: interleavings differ from round to round
        results, errors = {}, []
        barrier = threading.Barrier(len(jobs))

        def work(job):
            try:
                barrier.wait()
                results[job] = CALLS[job[0]](model, job[1])
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for job in jobs:
            assert torch.equal(results[job], alone[job]), job
        weights, pointers, flags = state(model)
        assert all(torch.equal(a, b) for a, b in zip(weights, before[0]))
        assert pointers == before[1] and flags == before[2]


def most_calls_inside_at_once(jobs) -> int:
    """Run ``jobs`` (method name, seed) on one slow model in threads; the most forwards in flight at once."""
    model = Slow().eval()
    inside, most = [0], [0]
    lock = threading.Lock()

    def hook(module, args):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.005)
        with lock:
            inside[0] -= 1

    handle = model.net.register_forward_pre_hook(hook)
    try:
        threads = [threading.Thread(target=CALLS[name], args=(model, seed)) for name, seed in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        handle.remove()
    return most[0]


def test_concurrent_input_noise_calls_share_the_model():
    assert most_calls_inside_at_once([("smoothgrad", s) for s in range(4)]) > 1


def test_a_weight_noise_call_runs_alone():
    assert most_calls_inside_at_once([("noisegrad", 0), ("noisegrad", 1), ("fusiongrad", 0)]) == 1


class Counter(torch.nn.Module):
    """Updates its buffers in forward whatever its mode: in place, and by replacing the tensor."""

    def __init__(self):
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.register_buffer("running", torch.zeros(6))

    def forward(self, t):
        self.calls += 1
        self.running = self.running * 0.5 + t.detach().mean(0)
        return t


@pytest.mark.parametrize("method", ["smoothgrad", "noisegrad", "fusiongrad", "gradient"])
def test_buffers_restored_whatever_the_modes(method):
    """The top module in eval mode, a batch norm left in train mode, a module that writes buffers."""
    model = torch.nn.Sequential(Counter(), torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 4))
    model.eval()
    model[2].train()
    model[2].running_mean.uniform_()
    buffers = {k: (b, b.clone()) for k, b in model.named_buffers()}
    modes = [m.training for m in model.modules()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CALLS[method](model, 0)
        CALLS[method](model, 1)
    for name, b in model.named_buffers():
        tensor, values = buffers[name]
        assert b is tensor, name  # the same tensor object, not a replacement
        assert torch.equal(b, values), name
    assert [m.training for m in model.modules()] == modes
    said = [w for w in caught if "train mode" in str(w.message)]
    assert len(said) == 1 and "submodule '2' (BatchNorm1d)" in str(said[0].message)


def test_buffers_restored_after_an_error():
    model = torch.nn.Sequential(Counter(), torch.nn.Linear(6, 4)).eval()
    before = {k: b.clone() for k, b in model.named_buffers()}

    def explode(module, args, out):
        if module.calls > 2:
            raise RuntimeError("boom")

    model[0].register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom"):
        fm.smoothgrad(model, X, 0, n=6, chunk_size=1)
    assert all(torch.equal(b, before[k]) for k, b in model.named_buffers())


def test_a_wrapper_and_its_model_are_one_model():
    """DataParallel (and torch.compile's wrapper) hold the same parameters: calls through the wrapper and
    through the model are coordinated as calls on one model."""
    model = Slow().eval()
    wrapped = torch.nn.DataParallel(model)
    jobs = [(wrapped if k % 2 else model, name, k) for k in range(4) for name in ("noisegrad", "smoothgrad")]
    alone = [CALLS[name](model, seed) for _, name, seed in jobs]
    before = state(model)
    results = [None] * len(jobs)

    def work(i):
        target, name, seed = jobs[i]
        results[i] = CALLS[name](target, seed)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(a, b) for a, b in zip(results, alone))
    after = state(model)
    assert all(torch.equal(a, b) for a, b in zip(after[0], before[0])) and after[1:] == before[1:]
