"""The compiled backends (cpu, cuda) from ``fastmollify._C``. Placeholder until the extension lands."""
from __future__ import annotations


class _Unbuilt:
    def __init__(self, name):
        self.name = name

    def unavailable(self, device, dtype, kernel):
        return "the compiled extension fastmollify._C is not built"


CPU = _Unbuilt("cpu")
CUDA = _Unbuilt("cuda")
