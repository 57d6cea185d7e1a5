// The adapter op's Python bindings: its input checks (for the fake kernel), the registration of the backends
// written in Python (triton, torch: fastadapter/ops/adapter/) into adapter_backends(), and the CUDA gate.
#include <torch/extension.h>

#include <string>

#include "adapter.h"
#include "python.h"
#ifdef FASTADAPTER_WITH_CUDA
#include "cuda/lt_gemm.h"
#endif

namespace fastadapter {
namespace {

// A Python backend's forward and backward, called with the GIL held. The functions are kept for the life of the
// process (never freed: the table outlives the interpreter, and freeing needs the GIL).
void register_adapter_backend(const std::string& name, py::object forward, py::object backward) {
  const auto* fwd = new py::object(std::move(forward));
  const auto* bwd = new py::object(std::move(backward));
  AdapterImpl impl;
  impl.forward = [fwd](const Tensor& x, const Tensor& w_down, const OptTensor& b_down, const Tensor& norm_weight,
                       const OptTensor& norm_bias, const Tensor& w_up, const OptTensor& b_up,
                       c10::string_view activation, c10::string_view norm, double eps, bool recompute) {
    py::gil_scoped_acquire gil;
    return (*fwd)(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, std::string(activation), std::string(norm),
                  eps, recompute)
        .cast<AdapterForwardResult>();
  };
  impl.backward = [bwd](const Tensor& grad_y, const Tensor& x, const Tensor& h, const Tensor& mean,
                        const Tensor& rstd, const Tensor& w_down, const OptTensor& b_down, const Tensor& norm_weight,
                        const OptTensor& norm_bias, const Tensor& w_up, c10::string_view activation,
                        c10::string_view norm, double eps, bool recompute, bool input_grad) {
    py::gil_scoped_acquire gil;
    return (*bwd)(grad_y, x, h, mean, rstd, w_down, b_down, norm_weight, norm_bias, w_up, std::string(activation),
                  std::string(norm), eps, recompute, input_grad)
        .cast<AdapterBackwardResult>();
  };
  adapter_backends().add(name, std::move(impl));
}

}  // namespace

void bind_adapter(py::module_& m) {
  m.def("check_adapter_inputs", &check_adapter_inputs,
        "the adapter op's input checks (also run by the op itself): raises TypeError or ValueError naming the "
        "bad argument");
  m.def("register_adapter_backend", &register_adapter_backend, py::arg("name"), py::arg("forward"),
        py::arg("backward"),
        "adds (or replaces) a Python implementation of the adapter op's whole forward and backward");
#ifdef FASTADAPTER_WITH_CUDA
  m.def("cuda_packed_rows_chunks", &cuda_packed_rows_chunks, py::arg("r"), py::arg("element_size"),
        py::arg("backward"),
        "packs per lane of the CUDA row-in-registers kernels for rows of r elements (0: the general kernels)");
  m.def(
      "adapter_cuda_gemm_paths",
      [] {
        const lt::PathCounts counts = lt::path_counts();
        py::dict out;
        out["cublaslt"] = counts.lt;
        out["fallback"] = counts.fallback;
        out["last_fallback"] = counts.last_fallback;
        return out;
      },
      "how many of the cuda backend's GEMMs ran through cuBLASLt with their epilogues, how many took ATen's "
      "path, and why the last of those did");
  m.def("set_cuda_packed_rows", &set_cuda_packed_rows, py::arg("enabled"),
        "the CUDA row-in-registers kernels on or off from now on (FASTADAPTER_CUDA_PACKED_ROWS, read at the "
        "first call, gives the first value)");
#endif
}

}  // namespace fastadapter
