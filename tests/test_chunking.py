"""The default chunk: measured on the first chunk, bounded by a memory budget, never by n."""
import pytest
import torch

import fastmollify as fm
from fastmollify import chunking


def test_default_chunk_is_the_budget_over_the_measured_bytes_per_sample(monkeypatch):
    monkeypatch.setattr(chunking, "CPU_BUDGET_CAP", 1 << 20)
    width, batch, features = 4096, 3, 6
    model = torch.nn.Sequential(torch.nn.Linear(features, width), torch.nn.Tanh(), torch.nn.Linear(width, 4)).eval()
    rows = []
    model.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    # per sample, autograd keeps tanh's float32 output for backward (the frozen weights are constants),
    # plus the noisy input and its gradient
    per_sample = batch * width * 4 + 2 * batch * features * 4
    chunk = (1 << 20) // per_sample
    x = torch.rand(batch, features)
    for n in (50, 500):
        rows.clear()
        fm.smoothgrad(model, x, 1, n=n)
        assert rows[0] == batch  # the measured first chunk: one sample
        assert max(rows) == chunk * batch
        assert sum(rows) == n * batch


def test_default_chunk_gives_the_same_map_as_any_chunk():
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3)).eval()
    x = torch.rand(2, 5)
    torch.testing.assert_close(fm.smoothgrad(model, x, 1, n=37), fm.smoothgrad(model, x, 1, n=37, chunk_size=5),
                               rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("text,expected", [("CUDA out of memory. Tried to allocate 2.00 GiB", True),
                                           ("DefaultCPUAllocator: can't allocate memory: you tried", True),
                                           ("mat1 and mat2 shapes cannot be multiplied", False)])
def test_out_of_memory_is_recognised(text, expected):
    assert chunking.is_oom(RuntimeError(text)) is expected


def test_available_memory_is_plausible():
    with open("/proc/meminfo") as info:
        total = next(int(line.split()[1]) * 1024 for line in info if line.startswith("MemTotal:"))
    assert 0 < chunking.available_memory() <= total
