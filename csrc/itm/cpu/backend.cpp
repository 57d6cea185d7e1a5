// The ITM ops' cpu backend: features in float32 (copies only for bf16/fp16 inputs), inverse norms when
// normalising, and the sweeps of margin.cpp and negatives.cpp. Registered as "cpu" in both ops' tables.
#include <ATen/ATen.h>

#include "../itm.h"
#include "kernels.h"

namespace fastadapter {
namespace {

struct Prepared {
  Tensor x, inv_norm, ids;
  cpu::Side side;
};

Prepared prepare(const Tensor& features, const OptTensor& ids, bool normalize) {
  Prepared p;
  p.x = features.to(at::kFloat).contiguous();
  if (normalize) p.inv_norm = at::linalg_vector_norm(p.x, 2, {1}).clamp_min(1e-12).reciprocal();
  if (ids) p.ids = ids->to(at::kLong).contiguous();
  p.side.x = p.x.data_ptr<float>();
  p.side.inv_norm = p.inv_norm.defined() ? p.inv_norm.data_ptr<float>() : nullptr;
  p.side.ids = p.ids.defined() ? p.ids.data_ptr<int64_t>() : nullptr;
  p.side.n = p.x.size(0);
  p.side.d = p.x.size(1);
  return p;
}

Tensor margin_forward_cpu(const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                          const OptTensor& text_ids, double margin, bool normalize) {
  const Prepared a = prepare(image, image_ids, normalize), b = prepare(text, text_ids, normalize);
  Tensor row_loss = at::empty({a.side.n}, image.options().dtype(at::kFloat));
  cpu::margin_rows(a.side, b.side, static_cast<float>(margin), row_loss.data_ptr<float>());
  return row_loss;
}

MarginBackwardResult margin_backward_cpu(const Tensor& grad_row_loss, const Tensor& image, const Tensor& text,
                                         const OptTensor& image_ids, const OptTensor& text_ids, double margin,
                                         bool normalize, bool image_grad, bool text_grad) {
  const Prepared a = prepare(image, image_ids, normalize), b = prepare(text, text_ids, normalize);
  const Tensor w = grad_row_loss.to(at::kFloat).contiguous();
  const auto f32 = image.options().dtype(at::kFloat);
  Tensor grad_image = image.new_empty({0}), grad_text = text.new_empty({0});
  if (image_grad) {
    Tensor g = at::empty(image.sizes(), f32);
    cpu::margin_grad(a.side, b.side, static_cast<float>(margin), w.data_ptr<float>(), nullptr, g.data_ptr<float>());
    grad_image = g.to(image.scalar_type());
  }
  if (text_grad) {  // the texts' rows against the images: the weight is per column there
    Tensor g = at::empty(text.sizes(), f32);
    cpu::margin_grad(b.side, a.side, static_cast<float>(margin), nullptr, w.data_ptr<float>(), g.data_ptr<float>());
    grad_text = g.to(text.scalar_type());
  }
  return {grad_image, grad_text};
}

NegativesResult negatives_cpu(const Tensor& image, const Tensor& text, const Tensor& temperature,
                              const OptTensor& image_ids, const OptTensor& text_ids, int64_t seed) {
  const Prepared a = prepare(image, image_ids, false), b = prepare(text, text_ids, false);
  const float inv_tau = static_cast<float>(1.0 / temperature.item<double>());
  const auto i64 = image.options().dtype(at::kLong);
  Tensor text_for_image = at::empty({a.side.n}, i64), image_for_text = at::empty({b.side.n}, i64);
  const auto key = static_cast<uint64_t>(seed);
  cpu::negatives_rows(a.side, b.side, inv_tau, key, 0, text_for_image.data_ptr<int64_t>());
  cpu::negatives_rows(b.side, a.side, inv_tau, key, 1, image_for_text.data_ptr<int64_t>());
  return {text_for_image, image_for_text};
}

[[maybe_unused]] const bool registered = (itm_margin_backends().add("cpu", {margin_forward_cpu, margin_backward_cpu}),
                                          hard_negatives_backends().add("cpu", {negatives_cpu}), true);

}  // namespace
}  // namespace fastadapter
