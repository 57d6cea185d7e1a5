// The adapter's cuda backend: the CUDA norm + activation kernels (norm_act_*.cu) between cuBLASLt GEMMs whose
// epilogues fold in what eager PyTorch does in separate passes (lt_gemm.h): the down-projection's bias; the
// up-projection's bias and the residual (C = x, beta = 1), so y is written once; in backward grad_x's residual
// (C = grad_y) and b_up's gradient with W_up's (BGRADB). A GEMM cuBLASLt has no algorithm for takes ATen's path
// (counted: _C.adapter_cuda_gemm_paths()).
#include <ATen/ATen.h>

#include "../adapter.h"
#include "lt_gemm.h"

namespace fastadapter {
namespace {

Tensor defined_or_empty(const OptTensor& t) { return t.has_value() ? t->contiguous() : Tensor(); }

// out = input · B (+ bias) (+ residual); B is weight (N, K), or (K, N) with weight_kn.
void linear_into(Tensor& out, const Tensor& input, const Tensor& weight, bool weight_kn, const OptTensor& bias,
                 const Tensor& residual) {
  if (lt::linear(out, input, weight, weight_kn, defined_or_empty(bias), residual)) return;
  const Tensor b = weight_kn ? weight : weight.t();
  if (residual.defined()) {
    out.copy_(residual);
    if (bias.has_value()) out.add_(*bias);
    out.addmm_(input, b);
  } else if (bias.has_value()) {
    at::addmm_out(out, *bias, input, b);
  } else {
    at::mm_out(out, input, b);
  }
}

// out = leftᵀ · right, and bias_grad (where defined) = Σ over rows of left.
void weight_grad_into(Tensor& out, const Tensor& left, const Tensor& right, Tensor& bias_grad) {
  if (lt::weight_grad(out, left, right, bias_grad)) return;
  at::mm_out(out, left.t(), right);
  if (bias_grad.defined()) at::sum_out(bias_grad, left, {0});
}

AdapterForwardResult forward_cuda(const Tensor& x, const Tensor& w_down, const OptTensor& b_down,
                                  const Tensor& norm_weight, const OptTensor& norm_bias, const Tensor& w_up,
                                  const OptTensor& b_up, c10::string_view activation, c10::string_view norm,
                                  double eps, bool recompute) {
  DownProjection d;
  d.lead = x.sizes().vec();
  d.lead.pop_back();
  d.x2 = x.reshape({-1, x.size(-1)}).contiguous();
  d.h = at::empty({d.x2.size(0), w_down.size(0)}, d.x2.options());
  linear_into(d.h, d.x2, w_down.contiguous(), false, b_down, Tensor());
  auto [a, mean, rstd] = norm_act_forward_cuda(d.h, norm_weight, norm_bias, activation, norm, eps);
  Tensor y = at::empty_like(d.x2);
  linear_into(y, a, w_up.contiguous(), false, b_up, d.x2);  // y = a·W_upᵀ + b_up + x, written once
  return d.outputs(y, mean, rstd, recompute);
}

AdapterBackwardResult backward_cuda(const Tensor& grad_y, const Tensor& x, const Tensor& h, const Tensor& mean,
                                    const Tensor& rstd, const Tensor& w_down, const OptTensor& b_down,
                                    const Tensor& norm_weight, const OptTensor& norm_bias, const Tensor& w_up,
                                    c10::string_view activation, c10::string_view norm, double eps, bool recompute,
                                    bool input_grad) {
  const int64_t width = x.size(-1), r = w_down.size(0);
  const Tensor gy = grad_y.reshape({-1, width}).contiguous();
  const Tensor x2 = x.reshape({-1, width}).contiguous();
  const Tensor wd = w_down.contiguous(), wu = w_up.contiguous();
  Tensor h2 = h.reshape({-1, r});
  if (recompute) {
    h2 = at::empty({x2.size(0), r}, x2.options());
    linear_into(h2, x2, wd, false, b_down, Tensor());
  }
  Tensor grad_a = at::empty({x2.size(0), r}, x2.options());
  linear_into(grad_a, gy, wu, true, c10::nullopt, Tensor());  // gy · W_up, W_up (D, r) = (K, N)
  auto [a, grad_h, grad_norm_weight, grad_norm_bias, grad_b_down] = norm_act_backward_cuda(
      grad_a, h2.contiguous(), mean.reshape({-1}), rstd.reshape({-1}), norm_weight, norm_bias, activation, norm);
  Tensor grad_x = x.new_empty({0});
  if (input_grad) {
    grad_x = at::empty_like(gy);
    linear_into(grad_x, grad_h, wd, true, c10::nullopt, gy);  // gy + grad_h · W_down, W_down (r, D) = (K, N)
    grad_x = grad_x.view(x.sizes());
  }
  Tensor grad_w_down = at::empty_like(wd), grad_w_up = at::empty_like(wu), grad_b_up = gy.new_empty({width});
  Tensor no_bias;
  weight_grad_into(grad_w_down, grad_h, x2, no_bias);
  weight_grad_into(grad_w_up, gy, a, grad_b_up);  // b_up's gradient, Σ gy, from the same GEMM's epilogue
  return {grad_x, grad_w_down, grad_b_down, grad_norm_weight, grad_norm_bias, grad_w_up, grad_b_up};
}

[[maybe_unused]] const bool registered = (adapter_backends().add("cuda", {forward_cuda, backward_cuda}), true);

}  // namespace
}  // namespace fastadapter
