// The ITM ops' Python bindings: their input checks (for the fake kernels) and the registration of the backends
// written in Python (triton, torch: fastadapter/ops/itm/) into the ops' tables.
#include <torch/extension.h>

#include <string>

#include "itm.h"
#include "python.h"

namespace fastadapter {
namespace {

// Python callables kept for the life of the process, as the other ops' Python backends are.
void register_itm_margin_backend(const std::string& name, py::object forward, py::object backward) {
  const auto* fwd = new py::object(std::move(forward));
  const auto* bwd = new py::object(std::move(backward));
  MarginImpl impl;
  impl.forward = [fwd](const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                       const OptTensor& text_ids, double margin, bool normalize) {
    py::gil_scoped_acquire gil;
    return (*fwd)(image, text, image_ids, text_ids, margin, normalize).cast<Tensor>();
  };
  impl.backward = [bwd](const Tensor& grad_row_loss, const Tensor& image, const Tensor& text,
                        const OptTensor& image_ids, const OptTensor& text_ids, double margin, bool normalize,
                        bool image_grad, bool text_grad) {
    py::gil_scoped_acquire gil;
    return (*bwd)(grad_row_loss, image, text, image_ids, text_ids, margin, normalize, image_grad, text_grad)
        .cast<MarginBackwardResult>();
  };
  itm_margin_backends().add(name, std::move(impl));
}

void register_hard_negatives_backend(const std::string& name, py::object sample) {
  const auto* fn = new py::object(std::move(sample));
  NegativesImpl impl;
  impl.sample = [fn](const Tensor& image, const Tensor& text, const Tensor& temperature, const OptTensor& image_ids,
                     const OptTensor& text_ids, int64_t seed) {
    py::gil_scoped_acquire gil;
    return (*fn)(image, text, temperature, image_ids, text_ids, seed).cast<NegativesResult>();
  };
  hard_negatives_backends().add(name, std::move(impl));
}

}  // namespace

void bind_itm(py::module_& m) {
  m.def("check_itm_margin_inputs", &check_itm_margin_inputs, "the ITM margin loss's input checks (also run by "
        "the op)");
  m.def("check_hard_negatives_inputs", &check_hard_negatives_inputs, "the hard-negative sampler's input checks "
        "(also run by the op)");
  m.def("register_itm_margin_backend", &register_itm_margin_backend, py::arg("name"), py::arg("forward"),
        py::arg("backward"), "adds (or replaces) a Python implementation of the ITM margin loss");
  m.def("register_hard_negatives_backend", &register_hard_negatives_backend, py::arg("name"), py::arg("sample"),
        "adds (or replaces) a Python implementation of the hard-negative sampler");
}

}  // namespace fastadapter
