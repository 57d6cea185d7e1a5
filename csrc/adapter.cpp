// The adapter op: orchestration and autograd, in C++ so that a call costs a few dispatcher hops, not a
// Python round trip. The GEMMs are ATen's (bias and residual folded into them); the fused norm+activation
// pass is the backend's: the native kernels (csrc/cpu, csrc/cuda) through fastadapter::norm_act_*, or
// Python ones (triton, eager) through fastadapter::norm_act_*_py, registered from fastadapter/ops.py.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "fastadapter.h"

namespace fastadapter {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;
using NormActForward = std::tuple<Tensor, Tensor, Tensor>;
using NormActBackward = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;

bool is_native(const std::string& backend) { return backend == "cpu" || backend == "cuda"; }

NormActForward norm_act_forward(const std::string& backend, const Tensor& h, const Tensor& weight,
                                const OptTensor& bias, c10::string_view activation, c10::string_view norm,
                                double eps) {
  if (is_native(backend)) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastadapter::norm_act_forward", "")
                         .typed<NormActForward(const Tensor&, const Tensor&, const OptTensor&, c10::string_view,
                                               c10::string_view, double)>();
    return op.call(h, weight, bias, activation, norm, eps);
  }
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastadapter::norm_act_forward_py", "")
                       .typed<NormActForward(const Tensor&, const Tensor&, const OptTensor&, c10::string_view,
                                             c10::string_view, double, c10::string_view)>();
  return op.call(h, weight, bias, activation, norm, eps, backend);
}

NormActBackward norm_act_backward(const std::string& backend, const Tensor& grad_a, const Tensor& h,
                                  const Tensor& mean, const Tensor& rstd, const Tensor& weight, const OptTensor& bias,
                                  c10::string_view activation, c10::string_view norm, double eps) {
  if (is_native(backend)) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastadapter::norm_act_backward", "")
                         .typed<NormActBackward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                                const Tensor&, const OptTensor&, c10::string_view, c10::string_view)>();
    return op.call(grad_a, h, mean, rstd, weight, bias, activation, norm);
  }
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("fastadapter::norm_act_backward_py", "")
                       .typed<NormActBackward(const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                                              const Tensor&, const OptTensor&, c10::string_view, c10::string_view,
                                              double, c10::string_view)>();
  return op.call(grad_a, h, mean, rstd, weight, bias, activation, norm, eps, backend);
}

// grad_x starts as a copy of grad_y (the residual) and accumulates in the last GEMM; grad_b_up = sum of rows.
std::tuple<Tensor, Tensor> residual_grad(const Tensor& gy) {
  if (gy.device().is_cpu()) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastadapter::residual_grad", "")
                         .typed<std::tuple<Tensor, Tensor>(const Tensor&)>();
    return op.call(gy);
  }
  return {gy.clone(at::MemoryFormat::Contiguous), gy.sum(0)};
}

// For long token counts CPU BLAS runs this GEMM faster as (a^T gy)^T (about 8% at 8192 tokens, measured);
// the transpose copy back costs ~0.25 ms, which pays only beyond this many rows.
constexpr int64_t kTransposedGradMinRows = 4096;

Tensor up_weight_grad(const Tensor& gy, const Tensor& a) {
  if (gy.device().is_cpu() && gy.size(0) >= kTransposedGradMinRows) return a.t().mm(gy).t().contiguous();
  return gy.t().mm(a);
}

Tensor down(const Tensor& x2, const Tensor& w_down, const OptTensor& b_down) {
  return b_down.has_value() ? at::addmm(*b_down, x2, w_down.t()) : x2.mm(w_down.t());
}

std::tuple<Tensor, Tensor, Tensor, Tensor> adapter_forward_impl(
    const Tensor& x, const Tensor& w_down, const OptTensor& b_down, const Tensor& norm_weight,
    const OptTensor& norm_bias, const Tensor& w_up, const OptTensor& b_up, c10::string_view activation,
    c10::string_view norm, double eps, bool recompute, c10::string_view backend) {
  const int64_t width = x.size(-1), r = w_down.size(0);
  auto lead = x.sizes().vec();
  lead.pop_back();
  const Tensor x2 = x.reshape({-1, width});
  const Tensor h = down(x2, w_down, b_down);
  auto [a, mean, rstd] = norm_act_forward(std::string(backend), h, norm_weight, norm_bias, activation, norm, eps);
  Tensor y = b_up.has_value() ? x2 + *b_up : x2.clone(at::MemoryFormat::Contiguous);
  y.addmm_(a, w_up.t());  // residual and bias ride in the GEMM's accumulator
  auto h_shape = lead;
  h_shape.push_back(r);
  auto y_shape = lead;
  y_shape.push_back(width);
  return {y.view(y_shape), recompute ? h.new_empty({0}) : h.view(h_shape), mean.view(lead), rstd.view(lead)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> adapter_backward_impl(
    const Tensor& grad_y, const Tensor& x, const Tensor& h, const Tensor& mean, const Tensor& rstd,
    const Tensor& w_down, const OptTensor& b_down, const Tensor& norm_weight, const OptTensor& norm_bias,
    const Tensor& w_up, c10::string_view activation, c10::string_view norm, double eps, bool recompute,
    bool input_grad, c10::string_view backend) {
  const int64_t width = x.size(-1), r = w_down.size(0);
  const Tensor gy = grad_y.reshape({-1, width});
  const Tensor x2 = x.reshape({-1, width});
  const Tensor h2 = recompute ? down(x2, w_down, b_down) : h.reshape({-1, r});
  const Tensor grad_a = gy.mm(w_up);
  auto [a, grad_h, grad_norm_weight, grad_norm_bias, grad_b_down] =
      norm_act_backward(std::string(backend), grad_a, h2, mean.reshape({-1}), rstd.reshape({-1}), norm_weight,
                        norm_bias, activation, norm, eps);
  Tensor grad_x, grad_b_up;
  if (input_grad) {
    std::tie(grad_x, grad_b_up) = residual_grad(gy);
    grad_x = grad_x.addmm_(grad_h, w_down).view(x.sizes());  // the residual's grad rides in the accumulator
  } else {
    grad_x = x.new_empty({0});
    grad_b_up = gy.sum(0);
  }
  return {grad_x, grad_h.t().mm(x2), grad_b_down, grad_norm_weight, grad_norm_bias, up_weight_grad(gy, a), grad_b_up};
}

// Autograd: saves x, h (empty when recompute) and the norm statistics, the contract of every backend.
class AdapterFunction : public torch::autograd::Function<AdapterFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                const Tensor& w_down, const OptTensor& b_down,
                                                const Tensor& norm_weight, const OptTensor& norm_bias,
                                                const Tensor& w_up, const OptTensor& b_up, std::string activation,
                                                std::string norm, double eps, bool recompute, std::string backend) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastadapter::adapter_forward", "")
                         .typed<decltype(adapter_forward_impl)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, h, mean, rstd] =
        op.call(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps, recompute, backend);
    ctx->save_for_backward({x, h, mean, rstd, w_down, b_down.value_or(Tensor()), norm_weight,
                            norm_bias.value_or(Tensor()), w_up});
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["norm"] = norm;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["recompute"] = recompute;
    ctx->saved_data["backend"] = backend;
    ctx->saved_data["has_b_up"] = b_up.has_value();
    ctx->mark_non_differentiable({h, mean, rstd});
    ctx->set_materialize_grads(false);  // else autograd allocates zero grads for h, mean and rstd
    return {y, h, mean, rstd};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastadapter::adapter_backward", "")
                         .typed<decltype(adapter_backward_impl)>();
    const auto saved = ctx->get_saved_variables();
    const auto optional = [](const Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); };
    const Tensor& grad_y = grads[0];
    if (!grad_y.defined()) return torch::autograd::variable_list(12);
    auto [gx, gwd, gbd, gnw, gnb, gwu, gbu] =
        op.call(grad_y, saved[0], saved[1], saved[2], saved[3], saved[4], optional(saved[5]), saved[6],
                optional(saved[7]), saved[8], ctx->saved_data["activation"].toStringRef(),
                ctx->saved_data["norm"].toStringRef(), ctx->saved_data["eps"].toDouble(),
                ctx->saved_data["recompute"].toBool(), ctx->needs_input_grad(0),
                ctx->saved_data["backend"].toStringRef());
    // One grad per forward argument; needs_input_grad counts only the tensors actually passed.
    const bool present[7] = {true, true, saved[5].defined(), true, saved[7].defined(), true,
                             ctx->saved_data["has_b_up"].toBool()};
    const Tensor computed[7] = {gx, gwd, gbd, gnw, gnb, gwu, gbu};
    torch::autograd::variable_list out(12);
    for (size_t i = 0, edge = 0; i < 7; ++i) {
      if (present[i] && ctx->needs_input_grad(edge++)) out[i] = computed[i];
    }
    return out;
  }
};

std::tuple<Tensor, Tensor, Tensor, Tensor> adapter_forward_autograd(
    const Tensor& x, const Tensor& w_down, const OptTensor& b_down, const Tensor& norm_weight,
    const OptTensor& norm_bias, const Tensor& w_up, const OptTensor& b_up, c10::string_view activation,
    c10::string_view norm, double eps, bool recompute, c10::string_view backend) {
  auto out = AdapterFunction::apply(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, std::string(activation),
                                    std::string(norm), eps, recompute, std::string(backend));
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastadapter, CompositeExplicitAutograd, m) {
  m.impl("adapter_forward", &adapter_forward_impl);
  m.impl("adapter_backward", &adapter_backward_impl);
}

TORCH_LIBRARY_IMPL(fastadapter, Autograd, m) { m.impl("adapter_forward", &adapter_forward_autograd); }

}  // namespace fastadapter
