// The op schemas of fastadapter: defined here once. Device kernels are registered in csrc/cpu and
// csrc/cuda, the adapter's orchestration and autograd in csrc/adapter.cpp (TORCH_LIBRARY_IMPL); the Python
// backends' kernels (triton, eager) and every fake kernel from fastadapter/ops.py through torch.library.
#include <torch/extension.h>

#include "fastadapter.h"

TORCH_LIBRARY(fastadapter, m) {
  // Norm + activation over the bottleneck, the elementwise middle of the adapter.
  // Returns a = act(norm(h)) and the per-row statistics (mean is 0 for RMSNorm), in float32.
  m.def("norm_act_forward(Tensor h, Tensor weight, Tensor? bias, str activation, str norm, float eps)"
        " -> (Tensor a, Tensor mean, Tensor rstd)");
  // Given grad_a, recomputes a and returns it with grad_h, the norm parameter grads and grad_h
  // summed over rows (the down-projection bias grad).
  m.def("norm_act_backward(Tensor grad_a, Tensor h, Tensor mean, Tensor rstd, Tensor weight, Tensor? bias,"
        " str activation, str norm) -> (Tensor a, Tensor grad_h, Tensor grad_weight, Tensor grad_bias,"
        " Tensor grad_h_sum)");
  // The same two passes by a Python backend (triton or eager), for the C++ orchestration to call.
  m.def("norm_act_forward_py(Tensor h, Tensor weight, Tensor? bias, str activation, str norm, float eps,"
        " str backend) -> (Tensor a, Tensor mean, Tensor rstd)");
  m.def("norm_act_backward_py(Tensor grad_a, Tensor h, Tensor mean, Tensor rstd, Tensor weight, Tensor? bias,"
        " str activation, str norm, float eps, str backend) -> (Tensor a, Tensor grad_h, Tensor grad_weight,"
        " Tensor grad_bias, Tensor grad_h_sum)");
  // The whole adapter y = x + up(act(norm(down(x)))). Also returns what backward needs: h (empty
  // when recompute) and the norm statistics; that is the saved-for-backward contract of every backend.
  m.def("adapter_forward(Tensor x, Tensor w_down, Tensor? b_down, Tensor norm_weight, Tensor? norm_bias,"
        " Tensor w_up, Tensor? b_up, str activation, str norm, float eps, bool recompute, str backend)"
        " -> (Tensor y, Tensor h, Tensor mean, Tensor rstd)");
  // Gradients of adapter_forward. grad_x is an empty tensor when input_grad is false.
  m.def("adapter_backward(Tensor grad_y, Tensor x, Tensor h, Tensor mean, Tensor rstd, Tensor w_down,"
        " Tensor? b_down, Tensor norm_weight, Tensor? norm_bias, Tensor w_up, str activation, str norm,"
        " float eps, bool recompute, bool input_grad, str backend) -> (Tensor grad_x, Tensor grad_w_down,"
        " Tensor grad_b_down, Tensor grad_norm_weight, Tensor grad_norm_bias, Tensor grad_w_up,"
        " Tensor grad_b_up)");
}

namespace {
bool built_with_cuda() {
#ifdef FASTADAPTER_WITH_CUDA
  return true;
#else
  return false;
#endif
}

const char* cpu_isa() {
#if defined(FASTADAPTER_ISA_AVX512)
  return "avx512";
#elif defined(FASTADAPTER_ISA_AVX2)
  return "avx2";
#else
  return "default";
#endif
}
}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastadapter native kernels (ops are registered under torch.ops.fastadapter)";
  m.def("built_with_cuda", &built_with_cuda, "whether the CUDA kernels were compiled into this build");
  m.def("cpu_isa", &cpu_isa, "the CPU instruction set the CPU kernels were compiled for");
  m.def("check_adapter_inputs", &fastadapter::check_adapter_inputs,
        "the adapter op's input checks (also run by the op itself): raises TypeError or ValueError naming the "
        "bad argument");
#ifdef FASTADAPTER_WITH_CUDA
  m.def("cuda_packed_rows_chunks", &fastadapter::cuda_packed_rows_chunks, py::arg("r"), py::arg("element_size"),
        py::arg("backward"),
        "packs per lane of the CUDA row-in-registers kernels for rows of r elements (0: the general kernels)");
#endif
  m.def("release_cpu_cache", &fastadapter::release_cpu_cache,
        "frees the CPU blocks cached for reuse by the adapter op; returns the bytes freed");
}
