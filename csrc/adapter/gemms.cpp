// The adapter's GEMMs, shared by the native backends, and the orchestration of a backend that supplies only the
// norm + activation pass (cuda today): ATen's GEMMs with bias and residual folded into them, that pass between.
#include <ATen/ATen.h>

#include "../common/cpu/memory.h"
#include "adapter.h"

namespace fastadapter {

// For long token counts CPU BLAS runs this GEMM faster as (aᵀ gy)ᵀ; the transpose copy back pays only beyond
// this many rows (benchmarks/results/).
constexpr int64_t kTransposedGradMinRows = 4096;

Tensor up_weight_grad(const Tensor& gy, const Tensor& a) {
  if (gy.device().is_cpu() && gy.size(0) >= kTransposedGradMinRows) return a.t().mm(gy).t().contiguous();
  return gy.t().mm(a);
}

void down_into(Tensor& h, const Tensor& x2, const Tensor& w_down, const OptTensor& b_down) {
  if (b_down.has_value()) {
    at::addmm_out(h, *b_down, x2, w_down.t());
  } else {
    at::mm_out(h, x2, w_down.t());
  }
}

Tensor empty_large(at::IntArrayRef sizes, const Tensor& like) {
  return like.is_cpu() ? empty_cpu_large(sizes, like.scalar_type()) : at::empty(sizes, like.options());
}

DownProjection down_projection(const Tensor& x, const Tensor& w_down, const OptTensor& b_down) {
  DownProjection d;
  d.lead = x.sizes().vec();
  d.lead.pop_back();
  d.x2 = x.reshape({-1, x.size(-1)});
  d.h = empty_large({d.x2.size(0), w_down.size(0)}, d.x2);
  down_into(d.h, d.x2, w_down, b_down);
  return d;
}

AdapterForwardResult DownProjection::outputs(const Tensor& y, const Tensor& mean, const Tensor& rstd,
                                             bool recompute) const {
  auto h_shape = lead;
  h_shape.push_back(h.size(1));
  auto y_shape = lead;
  y_shape.push_back(x2.size(1));
  return {y.view(y_shape), recompute ? x2.new_empty({0}) : h.view(h_shape), mean.view(lead), rstd.view(lead)};
}

AdapterForwardResult forward_around(NormActForward* middle, const Tensor& x, const Tensor& w_down,
                                    const OptTensor& b_down, const Tensor& norm_weight, const OptTensor& norm_bias,
                                    const Tensor& w_up, const OptTensor& b_up, c10::string_view activation,
                                    c10::string_view norm, double eps, bool recompute) {
  const DownProjection d = down_projection(x, w_down, b_down);
  auto [a, mean, rstd] = middle(d.h, norm_weight, norm_bias, activation, norm, eps);
  // y starts as x + b_up: the residual rides in the last GEMM.
  Tensor y = b_up.has_value() ? at::add(d.x2, *b_up) : d.x2.clone(at::MemoryFormat::Contiguous);
  y.addmm_(a, w_up.t());
  return d.outputs(y, mean, rstd, recompute);
}

AdapterBackwardResult backward_around(NormActBackward* middle, const Tensor& grad_y, const Tensor& x, const Tensor& h,
                                      const Tensor& mean, const Tensor& rstd, const Tensor& w_down,
                                      const OptTensor& b_down, const Tensor& norm_weight, const OptTensor& norm_bias,
                                      const Tensor& w_up, c10::string_view activation, c10::string_view norm,
                                      double eps, bool recompute, bool input_grad) {
  const int64_t width = x.size(-1), r = w_down.size(0);
  const Tensor gy = grad_y.reshape({-1, width});
  const Tensor x2 = x.reshape({-1, width});
  Tensor h2 = h.reshape({-1, r});
  if (recompute) {
    h2 = empty_large({x2.size(0), r}, x2);
    down_into(h2, x2, w_down, b_down);
  }
  const Tensor grad_a = gy.mm(w_up);
  auto [a, grad_h, grad_norm_weight, grad_norm_bias, grad_b_down] =
      middle(grad_a, h2, mean.reshape({-1}), rstd.reshape({-1}), norm_weight, norm_bias, activation, norm);
  // grad_x starts as grad_y (the residual's grad) and the last GEMM accumulates into it.
  const Tensor grad_x =
      input_grad ? gy.clone(at::MemoryFormat::Contiguous).addmm_(grad_h, w_down).view(x.sizes()) : x.new_empty({0});
  return {grad_x, grad_h.t().mm(x2), grad_b_down, grad_norm_weight, grad_norm_bias, up_weight_grad(gy, a), gy.sum(0)};
}

}  // namespace fastadapter
