// The LM loss op's Python bindings: its input checks (for the fake kernels) and the registration of the backends
// written in Python (torch: fastadapter/ops/lm_loss/torch_backend.py) into lm_loss_backends().
#include <torch/extension.h>

#include <string>

#include "lm_loss.h"
#include "python.h"

namespace fastadapter {
namespace {

// Kept for the life of the process, as the other ops' Python backends are (csrc/adapter/python.cpp).
void register_lm_loss_backend(const std::string& name, py::object forward, py::object backward) {
  const auto* fwd = new py::object(std::move(forward));
  const auto* bwd = new py::object(std::move(backward));
  LmLossImpl impl;
  impl.forward = [fwd](const Tensor& hidden, const Tensor& weight, const OptTensor& bias, const Tensor& labels,
                       double label_smoothing, int64_t ignore_index, c10::string_view reduction, bool hidden_grad,
                       bool weight_grad, bool bias_grad) {
    py::gil_scoped_acquire gil;
    return (*fwd)(hidden, weight, bias, labels, label_smoothing, ignore_index, std::string(reduction), hidden_grad,
                  weight_grad, bias_grad)
        .cast<LmLossForwardResult>();
  };
  impl.backward = [bwd](const Tensor& grad_loss, const Tensor& hidden, const Tensor& weight, const OptTensor& bias,
                        const Tensor& labels, const Tensor& lse, double label_smoothing, int64_t ignore_index,
                        bool hidden_grad, bool weight_grad, bool bias_grad) {
    py::gil_scoped_acquire gil;
    return (*bwd)(grad_loss, hidden, weight, bias, labels, lse, label_smoothing, ignore_index, hidden_grad,
                  weight_grad, bias_grad)
        .cast<LmLossBackwardResult>();
  };
  lm_loss_backends().add(name, std::move(impl));
}

}  // namespace

void bind_lm_loss(py::module_& m) {
  m.def("check_lm_loss_inputs", &check_lm_loss_inputs, "the LM loss op's input checks (also run by the op)");
  m.def("lm_loss_chunk_rows", &lm_loss_chunk_rows, "tokens per chunk of the fused LM loss for a vocabulary size");
  m.def("register_lm_loss_backend", &register_lm_loss_backend, py::arg("name"), py::arg("forward"),
        py::arg("backward"), "adds (or replaces) a Python implementation of the LM loss op");
}

}  // namespace fastadapter
