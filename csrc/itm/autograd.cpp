// The ITM ops' dispatcher kernels: checks, then the call's backend from the op's table. The margin loss has one
// autograd Function for every backend (it saves the inputs only: backward recomputes the tiles) and autocast
// (features in the autocast dtype, the loss float32). The sampler returns integer indices and has no gradient.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "itm.h"

namespace fastadapter {

BackendTable<MarginImpl>& itm_margin_backends() {
  static BackendTable<MarginImpl> table("itm_margin_loss");
  return table;
}

BackendTable<NegativesImpl>& hard_negatives_backends() {
  static BackendTable<NegativesImpl> table("sample_hard_negatives");
  return table;
}

namespace {

Tensor margin_forward_impl(const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                           const OptTensor& text_ids, double margin, bool normalize, c10::string_view backend) {
  check_itm_margin_inputs(image, text, image_ids, text_ids, margin);
  return itm_margin_backends().get(backend).forward(image, text, image_ids, text_ids, margin, normalize);
}

MarginBackwardResult margin_backward_impl(const Tensor& grad_row_loss, const Tensor& image, const Tensor& text,
                                          const OptTensor& image_ids, const OptTensor& text_ids, double margin,
                                          bool normalize, bool image_grad, bool text_grad,
                                          c10::string_view backend) {
  check_itm_margin_inputs(image, text, image_ids, text_ids, margin);
  check_itm_margin_backward_inputs(grad_row_loss, image);
  return itm_margin_backends().get(backend).backward(grad_row_loss, image, text, image_ids, text_ids, margin,
                                                     normalize, image_grad, text_grad);
}

NegativesResult negatives_impl(const Tensor& image, const Tensor& text, const Tensor& temperature,
                               const OptTensor& image_ids, const OptTensor& text_ids, int64_t seed,
                               c10::string_view backend) {
  check_hard_negatives_inputs(image, text, temperature, image_ids, text_ids);
  return hard_negatives_backends().get(backend).sample(image, text, temperature, image_ids, text_ids, seed);
}

const c10::TypedOperatorHandle<decltype(margin_forward_impl)>& margin_forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastadapter::itm_margin_forward", "")
                             .typed<decltype(margin_forward_impl)>();
  return op;
}

Tensor or_empty(const OptTensor& t) { return t.value_or(Tensor()); }
OptTensor optional(const Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); }

class MarginFunction : public torch::autograd::Function<MarginFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& image,
                                                const Tensor& text, const OptTensor& image_ids,
                                                const OptTensor& text_ids, double margin, bool normalize,
                                                std::string backend) {
    at::AutoDispatchBelowADInplaceOrView guard;
    Tensor row_loss = margin_forward_op().call(image, text, image_ids, text_ids, margin, normalize, backend);
    ctx->save_for_backward({image, text, or_empty(image_ids), or_empty(text_ids)});
    ctx->saved_data["margin"] = margin;
    ctx->saved_data["normalize"] = normalize;
    ctx->saved_data["backend"] = backend;
    return {row_loss};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastadapter::itm_margin_backward", "")
                         .typed<decltype(margin_backward_impl)>();
    TORCH_CHECK_NOT_IMPLEMENTED(!at::GradMode::is_enabled(), "fastadapter.itm_margin_loss: double backward "
                                "(create_graph=True) is not supported by the fused op; backend=\"eager\" is "
                                "differentiable to any order");
    const auto s = ctx->get_saved_variables();
    auto [grad_image, grad_text] = op.call(grads[0], s[0], s[1], optional(s[2]), optional(s[3]),
                                           ctx->saved_data["margin"].toDouble(),
                                           ctx->saved_data["normalize"].toBool(), ctx->needs_input_grad(0),
                                           ctx->needs_input_grad(1), ctx->saved_data["backend"].toStringRef());
    torch::autograd::variable_list out(7);
    if (ctx->needs_input_grad(0)) out[0] = grad_image;
    if (ctx->needs_input_grad(1)) out[1] = grad_text;
    return out;
  }
};

Tensor margin_forward_autograd(const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                               const OptTensor& text_ids, double margin, bool normalize, c10::string_view backend) {
  return MarginFunction::apply(image, text, image_ids, text_ids, margin, normalize, std::string(backend))[0];
}

template <c10::DeviceType device>
Tensor margin_forward_autocast(const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                               const OptTensor& text_ids, double margin, bool normalize, c10::string_view backend) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const auto type = at::autocast::get_lower_precision_fp_from_device_type(device);
  return margin_forward_op().call(at::autocast::cached_cast(type, image, device),
                                  at::autocast::cached_cast(type, text, device), image_ids, text_ids, margin,
                                  normalize, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastadapter, AutocastCPU, m) {
  m.impl("itm_margin_forward", &margin_forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fastadapter, AutocastCUDA, m) {
  m.impl("itm_margin_forward", &margin_forward_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(fastadapter, CompositeExplicitAutograd, m) {
  m.impl("itm_margin_forward", &margin_forward_impl);
  m.impl("itm_margin_backward", &margin_backward_impl);
  m.impl("hard_negatives", &negatives_impl);
}

TORCH_LIBRARY_IMPL(fastadapter, Autograd, m) { m.impl("itm_margin_forward", &margin_forward_autograd); }

}  // namespace fastadapter
