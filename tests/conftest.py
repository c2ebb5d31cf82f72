"""Test set-up: run Triton kernels in its interpreter on machines without an NVIDIA GPU.

TRITON_INTERPRET must be set before triton is first imported, hence before torch.
"""
import os

if not os.path.exists("/dev/nvidiactl"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    """Fresh but repeatable random inputs in every test."""
    torch.manual_seed(1234)
