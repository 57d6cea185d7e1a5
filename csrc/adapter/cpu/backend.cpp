// The adapter's cpu backend: ATen's GEMMs (MKL) around the C++ norm + activation kernels (norm_act.cpp), which
// also walk the residual's rows (y = x + b_up, grad_x = grad_y) so that this memory-bound pass overlaps their
// compute; the large tensors come from the huge-page block cache (csrc/common/cpu/memory.cpp).
#include <ATen/ATen.h>

#include "../adapter.h"

namespace fastadapter {
namespace {

AdapterForwardResult forward_cpu(const Tensor& x, const Tensor& w_down, const OptTensor& b_down,
                                 const Tensor& norm_weight, const OptTensor& norm_bias, const Tensor& w_up,
                                 const OptTensor& b_up, c10::string_view activation, c10::string_view norm, double eps,
                                 bool recompute) {
  const DownProjection d = down_projection(x, w_down, b_down);
  const int64_t rows = d.x2.size(0);
  Tensor y = empty_large({rows, x.size(-1)}, d.x2);  // starts as x + b_up: the residual rides in the last GEMM
  Tensor a = empty_large({rows, w_down.size(0)}, d.x2);
  Tensor mean = at::empty({rows}, d.x2.options().dtype(at::kFloat));
  Tensor rstd = at::empty({rows}, d.x2.options().dtype(at::kFloat));
  const ResidualRows residual{d.x2.contiguous(), b_up.value_or(Tensor()), y};
  norm_act_forward_cpu_into(d.h, norm_weight, norm_bias, activation, norm, eps, a, mean, rstd, &residual);
  y.addmm_(a, w_up.t());
  return d.outputs(y, mean, rstd, recompute);
}

AdapterBackwardResult backward_cpu(const Tensor& grad_y, const Tensor& x, const Tensor& h, const Tensor& mean,
                                   const Tensor& rstd, const Tensor& w_down, const OptTensor& b_down,
                                   const Tensor& norm_weight, const OptTensor& norm_bias, const Tensor& w_up,
                                   c10::string_view activation, c10::string_view norm, double eps, bool recompute,
                                   bool input_grad) {
  const int64_t width = x.size(-1), r = w_down.size(0);
  const Tensor gy = grad_y.reshape({-1, width});
  const Tensor x2 = x.reshape({-1, width});
  const int64_t rows = x2.size(0);
  Tensor h2 = h.reshape({-1, r});
  if (recompute) {
    h2 = empty_large({rows, r}, x2);
    down_into(h2, x2, w_down, b_down);
  }
  Tensor grad_a = empty_large({rows, r}, gy);
  at::mm_out(grad_a, gy, w_up);
  // grad_x starts as grad_y (the residual's grad) and the last GEMM accumulates into it.
  Tensor grad_x = input_grad ? empty_large({rows, width}, gy) : x.new_empty({0});
  Tensor a = empty_large({rows, r}, x2);
  Tensor& grad_h = grad_a;  // computed in place
  const ResidualRows residual{gy.contiguous(), Tensor(), grad_x};
  const auto sums = norm_act_backward_cpu_into(grad_a, h2, mean.reshape({-1}), rstd.reshape({-1}), norm_weight,
                                               norm_bias, activation, norm, a, grad_h,
                                               input_grad ? &residual : nullptr);
  const Tensor grad_b_up = input_grad ? sums.residual_sum : gy.sum(0);
  if (input_grad) grad_x = grad_x.addmm_(grad_h, w_down).view(x.sizes());
  return {grad_x, grad_h.t().mm(x2), sums.grad_h_sum, sums.grad_weight, sums.grad_bias, up_weight_grad(gy, a),
          grad_b_up};
}

[[maybe_unused]] const bool registered = (adapter_backends().add("cpu", {forward_cpu, backward_cpu}), true);

}  // namespace
}  // namespace fastadapter
