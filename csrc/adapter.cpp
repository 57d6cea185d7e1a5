// The adapter op: orchestration and autograd, in C++ so that a call costs a few dispatcher hops, not a
// Python round trip. The GEMMs are ATen's (bias and residual folded into them); the fused norm+activation
// pass is the backend's: the native kernels (csrc/cpu, csrc/cuda) or Python ones (triton, eager) through
// fastadapter::norm_act_*_py, registered from fastadapter/ops.py. On CPU the norm pass also walks the
// residual's rows (y = x + b_up, grad_x = grad_y) and large tensors come from csrc/cpu/memory.cpp.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
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

// For long token counts CPU BLAS runs this GEMM faster as (a^T gy)^T (about 8% at 8192 tokens, measured);
// the transpose copy back costs ~0.25 ms, which pays only beyond this many rows.
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

// The op's large tensors: on CPU from the caching huge-page allocator (csrc/cpu/memory.cpp); other devices'
// allocators already cache.
Tensor empty_large(at::IntArrayRef sizes, const Tensor& like) {
  return like.is_cpu() ? empty_cpu_large(sizes, like.scalar_type()) : at::empty(sizes, like.options());
}

std::tuple<Tensor, Tensor, Tensor, Tensor> adapter_forward_impl(
    const Tensor& x, const Tensor& w_down, const OptTensor& b_down, const Tensor& norm_weight,
    const OptTensor& norm_bias, const Tensor& w_up, const OptTensor& b_up, c10::string_view activation,
    c10::string_view norm, double eps, bool recompute, c10::string_view backend) {
  check_adapter_inputs(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps);
  const int64_t width = x.size(-1), r = w_down.size(0);
  auto lead = x.sizes().vec();
  lead.pop_back();
  const Tensor x2 = x.reshape({-1, width});
  const int64_t rows = x2.size(0);
  const bool cpu = backend == "cpu";
  Tensor h = empty_large({rows, r}, x2);  // saved for backward unless recompute
  down_into(h, x2, w_down, b_down);
  Tensor y = empty_large({rows, width}, x2);  // starts as x + b_up: the residual rides in the last GEMM
  Tensor a, mean, rstd;
  if (cpu) {
    a = empty_large({rows, r}, x2);
    mean = at::empty({rows}, x2.options().dtype(at::kFloat));
    rstd = at::empty({rows}, x2.options().dtype(at::kFloat));
    const ResidualRows residual{x2.contiguous(), b_up.value_or(Tensor()), y};
    norm_act_forward_cpu_into(h, norm_weight, norm_bias, activation, norm, eps, a, mean, rstd, &residual);
  } else {
    std::tie(a, mean, rstd) = norm_act_forward(std::string(backend), h, norm_weight, norm_bias, activation, norm, eps);
    if (b_up.has_value()) {
      at::add_out(y, x2, *b_up);
    } else {
      y.copy_(x2);
    }
  }
  y.addmm_(a, w_up.t());
  auto h_shape = lead;
  h_shape.push_back(r);
  auto y_shape = lead;
  y_shape.push_back(width);
  return {y.view(y_shape), recompute ? x2.new_empty({0}) : h.view(h_shape), mean.view(lead), rstd.view(lead)};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> adapter_backward_impl(
    const Tensor& grad_y, const Tensor& x, const Tensor& h, const Tensor& mean, const Tensor& rstd,
    const Tensor& w_down, const OptTensor& b_down, const Tensor& norm_weight, const OptTensor& norm_bias,
    const Tensor& w_up, c10::string_view activation, c10::string_view norm, double eps, bool recompute,
    bool input_grad, c10::string_view backend) {
  const int64_t width = x.size(-1), r = w_down.size(0);
  const Tensor gy = grad_y.reshape({-1, width});
  const Tensor x2 = x.reshape({-1, width});
  const int64_t rows = x2.size(0);
  const bool cpu = backend == "cpu";
  Tensor h2 = h.reshape({-1, r});
  if (recompute) {
    h2 = empty_large({rows, r}, x2);
    down_into(h2, x2, w_down, b_down);
  }
  Tensor grad_a = empty_large({rows, r}, gy);
  at::mm_out(grad_a, gy, w_up);
  // grad_x starts as grad_y (the residual's grad) and the last GEMM accumulates into it.
  Tensor grad_x = input_grad ? empty_large({rows, width}, gy) : x.new_empty({0});
  Tensor a, grad_h, grad_norm_weight, grad_norm_bias, grad_b_down, grad_b_up;
  if (cpu) {
    a = empty_large({rows, r}, x2);
    grad_h = grad_a;  // computed in place
    const ResidualRows residual{gy.contiguous(), Tensor(), grad_x};
    auto sums = norm_act_backward_cpu_into(grad_a, h2, mean.reshape({-1}), rstd.reshape({-1}), norm_weight,
                                           norm_bias, activation, norm, a, grad_h, input_grad ? &residual : nullptr);
    grad_norm_weight = sums.grad_weight;
    grad_norm_bias = sums.grad_bias;
    grad_b_down = sums.grad_h_sum;
    grad_b_up = input_grad ? sums.residual_sum : gy.sum(0);
  } else {
    std::tie(a, grad_h, grad_norm_weight, grad_norm_bias, grad_b_down) =
        norm_act_backward(std::string(backend), grad_a, h2, mean.reshape({-1}), rstd.reshape({-1}), norm_weight,
                          norm_bias, activation, norm, eps);
    if (input_grad) grad_x.copy_(gy);
    grad_b_up = gy.sum(0);
  }
  if (input_grad) grad_x = grad_x.addmm_(grad_h, w_down).view(x.sizes());
  return {grad_x, grad_h.t().mm(x2), grad_b_down, grad_norm_weight, grad_norm_bias, up_weight_grad(gy, a), grad_b_up};
}

// The op's typed handle, looked up once; autograd and autocast call back into the dispatcher through it.
const c10::TypedOperatorHandle<decltype(adapter_forward_impl)>& adapter_forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastadapter::adapter_forward", "")
                             .typed<decltype(adapter_forward_impl)>();
  return op;
}

// Autograd: saves x, h (empty when recompute) and the norm statistics, the contract of every backend.
class AdapterFunction : public torch::autograd::Function<AdapterFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& x,
                                                const Tensor& w_down, const OptTensor& b_down,
                                                const Tensor& norm_weight, const OptTensor& norm_bias,
                                                const Tensor& w_up, const OptTensor& b_up, std::string activation,
                                                std::string norm, double eps, bool recompute, std::string backend) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, h, mean, rstd] = adapter_forward_op().call(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up,
                                                        activation, norm, eps, recompute, backend);
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
    // Grad mode is on in a backward only under create_graph=True: the grads would have to be differentiable,
    // and the backward kernels are not, so say so instead of returning grads a second backward treats as constants.
    TORCH_CHECK_NOT_IMPLEMENTED(!at::GradMode::is_enabled(), "fastadapter.adapter: double backward "
                                "(create_graph=True) is not supported by the fused op; the reference adapters "
                                "(AdapterConfig(backend=\"reference\"), fastadapter.reference.adapter) are "
                                "differentiable to any order");
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

// Under torch.autocast the op follows F.linear's policy: every floating input in the autocast dtype, so the
// float32 adapter parameters meet the bf16/fp16 activations of an autocast model. The casts are ordinary
// differentiable ops (cached per parameter, as ATen's are), so the parameters' grads come back in float32.
template <c10::DeviceType device>
std::tuple<Tensor, Tensor, Tensor, Tensor> adapter_forward_autocast(
    const Tensor& x, const Tensor& w_down, const OptTensor& b_down, const Tensor& norm_weight,
    const OptTensor& norm_bias, const Tensor& w_up, const OptTensor& b_up, c10::string_view activation,
    c10::string_view norm, double eps, bool recompute, c10::string_view backend) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const auto type = at::autocast::get_lower_precision_fp_from_device_type(device);
  const auto cast = [type](const auto& t) { return at::autocast::cached_cast(type, t, device); };
  return adapter_forward_op().call(cast(x), cast(w_down), cast(b_down), cast(norm_weight), cast(norm_bias),
                                   cast(w_up), cast(b_up), activation, norm, eps, recompute, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastadapter, AutocastCPU, m) {
  m.impl("adapter_forward", &adapter_forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fastadapter, AutocastCUDA, m) {
  m.impl("adapter_forward", &adapter_forward_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(fastadapter, CompositeExplicitAutograd, m) {
  m.impl("adapter_forward", &adapter_forward_impl);
  m.impl("adapter_backward", &adapter_backward_impl);
}

TORCH_LIBRARY_IMPL(fastadapter, Autograd, m) { m.impl("adapter_forward", &adapter_forward_autograd); }

}  // namespace fastadapter
