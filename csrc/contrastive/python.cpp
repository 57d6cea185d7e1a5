// The contrastive op's Python bindings: its input checks (for the fake kernels) and the registration of the
// backends written in Python (triton, torch: fastadapter/ops/contrastive/) into contrastive_backends().
#include <torch/extension.h>

#include <string>

#include "contrastive.h"
#include "python.h"

namespace fastadapter {
namespace {

// A Python backend's forward and backward, called with the GIL held; kept for the life of the process, as the
// adapter's are (csrc/adapter/python.cpp).
void register_contrastive_backend(const std::string& name, py::object forward, py::object backward) {
  const auto* fwd = new py::object(std::move(forward));
  const auto* bwd = new py::object(std::move(backward));
  ContrastiveImpl impl;
  impl.forward = [fwd](const Tensor& query, const Tensor& keys, const Tensor& temperature,
                       const OptTensor& query_ids, const OptTensor& key_ids, const OptTensor& soft_query,
                       const OptTensor& soft_keys, double alpha, bool normalize, bool rows, bool columns) {
    py::gil_scoped_acquire gil;
    return (*fwd)(query, keys, temperature, query_ids, key_ids, soft_query, soft_keys, alpha, normalize, rows,
                  columns)
        .cast<ContrastiveForwardResult>();
  };
  impl.backward = [bwd](const OptTensor& grad_row_loss, const OptTensor& grad_column_loss, const Tensor& query,
                        const Tensor& keys, const Tensor& temperature, const OptTensor& query_ids,
                        const OptTensor& key_ids, const OptTensor& soft_query, const OptTensor& soft_keys,
                        double alpha, bool normalize, const Tensor& row_stats, const Tensor& column_stats,
                        bool query_grad, bool keys_grad, bool temperature_grad) {
    py::gil_scoped_acquire gil;
    return (*bwd)(grad_row_loss, grad_column_loss, query, keys, temperature, query_ids, key_ids, soft_query,
                  soft_keys, alpha, normalize, row_stats, column_stats, query_grad, keys_grad, temperature_grad)
        .cast<ContrastiveBackwardResult>();
  };
  contrastive_backends().add(name, std::move(impl));
}

}  // namespace

void bind_contrastive(py::module_& m) {
  m.def("check_contrastive_inputs", &check_contrastive_inputs,
        "the contrastive op's input checks (also run by the op itself): raises TypeError or ValueError naming the "
        "bad argument");
  m.def("check_contrastive_backward_inputs", &check_contrastive_backward_inputs,
        "the contrastive op's backward input checks");
  m.def("register_contrastive_backend", &register_contrastive_backend, py::arg("name"), py::arg("forward"),
        py::arg("backward"),
        "adds (or replaces) a Python implementation of the contrastive op's whole forward and backward");
}

}  // namespace fastadapter
