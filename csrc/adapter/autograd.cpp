// The adapter op's dispatcher kernels: checks, then the call's backend from adapter_backends(); autograd (one
// Function for every backend: it saves x, h and the norm statistics, the op's contract) and autocast. In C++ so
// that a call costs a few dispatcher hops, not a Python round trip.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "adapter.h"

namespace fastadapter {

BackendTable<AdapterImpl>& adapter_backends() {
  static BackendTable<AdapterImpl> table("adapter");
  return table;
}

namespace {

AdapterForwardResult adapter_forward_impl(const Tensor& x, const Tensor& w_down, const OptTensor& b_down,
                                          const Tensor& norm_weight, const OptTensor& norm_bias, const Tensor& w_up,
                                          const OptTensor& b_up, c10::string_view activation, c10::string_view norm,
                                          double eps, bool recompute, c10::string_view backend) {
  check_adapter_inputs(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps);
  return adapter_backends().get(backend).forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation,
                                                 norm, eps, recompute);
}

AdapterBackwardResult adapter_backward_impl(const Tensor& grad_y, const Tensor& x, const Tensor& h,
                                            const Tensor& mean, const Tensor& rstd, const Tensor& w_down,
                                            const OptTensor& b_down, const Tensor& norm_weight,
                                            const OptTensor& norm_bias, const Tensor& w_up,
                                            c10::string_view activation, c10::string_view norm, double eps,
                                            bool recompute, bool input_grad, c10::string_view backend) {
  return adapter_backends().get(backend).backward(grad_y, x, h, mean, rstd, w_down, b_down, norm_weight, norm_bias,
                                                  w_up, activation, norm, eps, recompute, input_grad);
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
                                "(create_graph=True) is not supported by the fused op; the eager adapters "
                                "(AdapterConfig(backend=\"eager\"), fastadapter.adapter(..., backend=\"eager\")) are "
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
