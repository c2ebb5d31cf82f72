"""The Triton backend. Placeholder until the Triton kernels land."""
name = "triton"


def unavailable(device, dtype, kernel):
    return "the Triton kernels are not written yet"
