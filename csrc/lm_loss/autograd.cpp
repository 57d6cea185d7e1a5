// The LM loss op's dispatcher kernels: checks, then the backend from lm_loss_backends(); one autograd Function
// for every backend and autocast (the inputs in the autocast dtype, as for F.linear; the loss float32). With
// "mean"/"sum" the forward already computed the gradients of the reduced loss, so backward scales them by the
// incoming scalar; with "none" backward recomputes chunk by chunk from the saved log-sum-exp.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "lm_loss.h"

namespace fastadapter {

BackendTable<LmLossImpl>& lm_loss_backends() {
  static BackendTable<LmLossImpl> table("lm_loss");
  return table;
}

namespace {

LmLossForwardResult forward_impl(const Tensor& hidden, const Tensor& weight, const OptTensor& bias,
                                 const Tensor& labels, double label_smoothing, int64_t ignore_index,
                                 c10::string_view reduction, bool hidden_grad, bool weight_grad, bool bias_grad,
                                 c10::string_view backend) {
  check_lm_loss_inputs(hidden, weight, bias, labels, label_smoothing, reduction);
  return lm_loss_backends().get(backend).forward(hidden, weight, bias, labels, label_smoothing, ignore_index,
                                                 reduction, hidden_grad, weight_grad, bias_grad && bias.has_value());
}

LmLossBackwardResult backward_impl(const Tensor& grad_loss, const Tensor& hidden, const Tensor& weight,
                                   const OptTensor& bias, const Tensor& labels, const Tensor& lse,
                                   double label_smoothing, int64_t ignore_index, bool hidden_grad, bool weight_grad,
                                   bool bias_grad, c10::string_view backend) {
  check_lm_loss_inputs(hidden, weight, bias, labels, label_smoothing, "none");
  return lm_loss_backends().get(backend).backward(grad_loss, hidden, weight, bias, labels, lse, label_smoothing,
                                                  ignore_index, hidden_grad, weight_grad,
                                                  bias_grad && bias.has_value());
}

const c10::TypedOperatorHandle<decltype(forward_impl)>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastadapter::lm_loss_forward", "")
                             .typed<decltype(forward_impl)>();
  return op;
}

class LmLossFunction : public torch::autograd::Function<LmLossFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& hidden,
                                                const Tensor& weight, const OptTensor& bias, const Tensor& labels,
                                                double label_smoothing, int64_t ignore_index, std::string reduction,
                                                std::string backend, bool hidden_grad, bool weight_grad,
                                                bool bias_grad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, lse, grad_hidden, grad_weight, grad_bias] =
        forward_op().call(hidden, weight, bias, labels, label_smoothing, ignore_index, reduction, hidden_grad,
                          weight_grad, bias_grad, backend);
    const bool per_token = reduction == "none";
    // The inputs too: a grad the forward did not compute (not asked for there) is recomputed chunk by chunk.
    ctx->save_for_backward({hidden, weight, bias.value_or(Tensor()), labels, lse, grad_hidden, grad_weight,
                            grad_bias});
    ctx->saved_data["reduction"] = reduction;
    ctx->saved_data["per_token"] = per_token;
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["backend"] = backend;
    ctx->saved_data["hidden_grad"] = hidden_grad;
    ctx->saved_data["weight_grad"] = weight_grad;
    ctx->saved_data["bias_grad"] = bias_grad;
    ctx->mark_non_differentiable({lse, grad_hidden, grad_weight, grad_bias});
    return {loss, lse, grad_hidden, grad_weight, grad_bias};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastadapter::lm_loss_backward", "")
                         .typed<decltype(backward_impl)>();
    TORCH_CHECK_NOT_IMPLEMENTED(!at::GradMode::is_enabled(), "fastadapter.lm_loss: double backward "
                                "(create_graph=True) is not supported by the fused op; backend=\"eager\" is");
    const auto s = ctx->get_saved_variables();
    const bool flags[3] = {ctx->saved_data["hidden_grad"].toBool(), ctx->saved_data["weight_grad"].toBool(),
                           ctx->saved_data["bias_grad"].toBool()};
    torch::autograd::variable_list out(11);
    Tensor gh, gw, gb;
    const bool need[3] = {ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                          s[2].defined() && ctx->needs_input_grad(2)};
    const bool per_token = ctx->saved_data["per_token"].toBool();
    const bool have[3] = {!per_token && flags[0], !per_token && flags[1], !per_token && flags[2]};
    if ((need[0] && !have[0]) || (need[1] && !have[1]) || (need[2] && !have[2])) {
      // Per-token grads: the incoming ones ("none"), or those of the reduction (g, or g / count for "mean").
      Tensor tokens = grads[0];
      if (!per_token) {
        const Tensor valid = s[3].ne(ctx->saved_data["ignore_index"].toInt()).to(at::kFloat);
        tokens = ctx->saved_data["reduction"].toStringRef() == "mean" ? valid * grads[0] / valid.sum()
                                                                       : valid * grads[0];
      }
      const OptTensor bias = s[2].defined() ? OptTensor(s[2]) : OptTensor();
      std::tie(gh, gw, gb) = op.call(tokens, s[0], s[1], bias, s[3], s[4],
                                     ctx->saved_data["label_smoothing"].toDouble(),
                                     ctx->saved_data["ignore_index"].toInt(), need[0] && !have[0],
                                     need[1] && !have[1], need[2] && !have[2],
                                     ctx->saved_data["backend"].toStringRef());
    }
    // The gradients of the reduced loss the forward computed, times its incoming grad.
    if (have[0]) gh = s[5] * grads[0];
    if (have[1]) gw = s[6] * grads[0];
    if (have[2]) gb = s[7] * grads[0];
    out[0] = need[0] ? gh : Tensor();
    out[1] = need[1] ? gw : Tensor();
    out[2] = need[2] ? gb : Tensor();
    return out;
  }
};

LmLossForwardResult forward_autograd(const Tensor& hidden, const Tensor& weight, const OptTensor& bias,
                                     const Tensor& labels, double label_smoothing, int64_t ignore_index,
                                     c10::string_view reduction, bool hidden_grad, bool weight_grad, bool bias_grad,
                                     c10::string_view backend) {
  // The flags say which gradients the forward computes ("mean"/"sum"); the caller sets them (the Python function:
  // grad mode and requires_grad), so that a traced graph and its run agree. A gradient backward needs but the
  // forward did not compute is recomputed chunk by chunk: a flag is a plan, never a wrong gradient.
  auto out = LmLossFunction::apply(hidden, weight, bias, labels, label_smoothing, ignore_index,
                                   std::string(reduction), std::string(backend), hidden_grad, weight_grad,
                                   bias_grad && bias.has_value());
  return {out[0], out[1], out[2], out[3], out[4]};
}

template <c10::DeviceType device>
LmLossForwardResult forward_autocast(const Tensor& hidden, const Tensor& weight, const OptTensor& bias,
                                     const Tensor& labels, double label_smoothing, int64_t ignore_index,
                                     c10::string_view reduction, bool hidden_grad, bool weight_grad, bool bias_grad,
                                     c10::string_view backend) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const auto type = at::autocast::get_lower_precision_fp_from_device_type(device);
  const auto cast = [type](const auto& t) { return at::autocast::cached_cast(type, t, device); };
  return forward_op().call(cast(hidden), cast(weight), cast(bias), labels, label_smoothing, ignore_index, reduction,
                           hidden_grad, weight_grad, bias_grad, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastadapter, AutocastCPU, m) {
  m.impl("lm_loss_forward", &forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fastadapter, AutocastCUDA, m) {
  m.impl("lm_loss_forward", &forward_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(fastadapter, CompositeExplicitAutograd, m) {
  m.impl("lm_loss_forward", &forward_impl);
  m.impl("lm_loss_backward", &backward_impl);
}

TORCH_LIBRARY_IMPL(fastadapter, Autograd, m) { m.impl("lm_loss_forward", &forward_autograd); }

}  // namespace fastadapter
