// fastmollify._C: the op schemas (registered once) and the Python module.
//
// The ops mutate their output arguments and return nothing. Seeds travel as their two
// 32-bit Philox key words (seed_lo = seed & 0xffffffff, seed_hi = seed >> 32), so every
// seed in [0, 2**64) passes through a signed 64-bit schema int unchanged.
// Device implementations: cpu/ops_cpu.cpp (CPU) and cuda/ops_cuda.cpp (CUDA);
// fake (meta) implementations for torch.compile: fastmollify/ops/extension.py.
#include <Python.h>
#include <torch/library.h>

#include "ops.h"

TORCH_LIBRARY(fastmollify, m) {
  m.def(
      "perturb(Tensor x, Tensor(a!) out, Tensor? lo, Tensor? hi, int seed_lo, int seed_hi, int stream, "
      "int sample_start, int example_offset, int kernel, float scale, int sigma_mode, bool clip) -> ()");
  m.def("accumulate(Tensor(a!) mean, Tensor(b!) m2, Tensor grads, Tensor? weights, float count) -> ()");
  m.def(
      "perturb_weights(Tensor clean, Tensor(a!) out, int seed_lo, int seed_hi, int draw, int index, "
      "float sigma) -> ()");
  m.def(
      "perturb_weights_many(Tensor[] cleans, Tensor(a!)[] outs, int seed_lo, int seed_hi, int draw, int[] indices, "
      "float sigma) -> ()");
}

namespace {
PyObject* philox_path(PyObject*, PyObject*) { return PyLong_FromLong(fastmollify::cpu_philox_path()); }

PyMethodDef methods[] = {
    {"philox_path", philox_path, METH_NOARGS,
     "The CPU backend's Philox path: 2 = AVX-512, 1 = AVX2, 0 = scalar (FASTMOLLIFY_PHILOX_PATH can lower it)."},
    {nullptr, nullptr, 0, nullptr}};
}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT, "_C",
      "fastmollify's compiled ops, registered as torch.ops.fastmollify.{perturb,accumulate,perturb_weights,"
      "perturb_weights_many}.", -1,
      methods};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef FASTMOLLIFY_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddIntConstant(module, "ABI_VERSION", fastmollify::kAbiVersion) < 0 ||
      PyModule_AddIntConstant(module, "WITH_CUDA", with_cuda) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
