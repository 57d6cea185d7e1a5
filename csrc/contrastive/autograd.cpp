// The contrastive op's dispatcher kernels: checks, then the call's backend from contrastive_backends(); one
// autograd Function for every backend (it saves the inputs and the per-row and per-column statistics, the op's
// contract) and autocast (features in the autocast dtype; the losses and statistics are float32 regardless).
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <string>

#include "contrastive.h"

namespace fastadapter {

BackendTable<ContrastiveImpl>& contrastive_backends() {
  static BackendTable<ContrastiveImpl> table("contrastive_loss");
  return table;
}

namespace {

ContrastiveForwardResult forward_impl(const Tensor& query, const Tensor& keys, const Tensor& temperature,
                                      const OptTensor& query_ids, const OptTensor& key_ids,
                                      const OptTensor& soft_query, const OptTensor& soft_keys, double alpha,
                                      bool normalize, bool rows, bool columns, c10::string_view backend) {
  check_contrastive_inputs(query, keys, temperature, query_ids, key_ids, soft_query, soft_keys, alpha, rows,
                           columns);
  return contrastive_backends().get(backend).forward(query, keys, temperature, query_ids, key_ids, soft_query,
                                                     soft_keys, alpha, normalize, rows, columns);
}

ContrastiveBackwardResult backward_impl(const OptTensor& grad_row_loss, const OptTensor& grad_column_loss,
                                        const Tensor& query, const Tensor& keys, const Tensor& temperature,
                                        const OptTensor& query_ids, const OptTensor& key_ids,
                                        const OptTensor& soft_query, const OptTensor& soft_keys, double alpha,
                                        bool normalize, const Tensor& row_stats, const Tensor& column_stats,
                                        bool query_grad, bool keys_grad, bool temperature_grad,
                                        c10::string_view backend) {
  check_contrastive_backward_inputs(grad_row_loss, grad_column_loss, query, keys, row_stats, column_stats);
  return contrastive_backends().get(backend).backward(grad_row_loss, grad_column_loss, query, keys, temperature,
                                                      query_ids, key_ids, soft_query, soft_keys, alpha, normalize,
                                                      row_stats, column_stats, query_grad, keys_grad,
                                                      temperature_grad);
}

const c10::TypedOperatorHandle<decltype(forward_impl)>& forward_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastadapter::contrastive_forward", "")
                             .typed<decltype(forward_impl)>();
  return op;
}

Tensor or_empty(const OptTensor& t) { return t.value_or(Tensor()); }
OptTensor optional(const Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); }

// Saves the features, temperature, ids, soft features and the statistics; grads flow to query, keys and the
// temperature only (ids are integers; the soft targets are constants, as BLIP computes them under no_grad).
class ContrastiveFunction : public torch::autograd::Function<ContrastiveFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const Tensor& query,
                                                const Tensor& keys, const Tensor& temperature,
                                                const OptTensor& query_ids, const OptTensor& key_ids,
                                                const OptTensor& soft_query, const OptTensor& soft_keys,
                                                double alpha, bool normalize, bool rows, bool columns,
                                                std::string backend) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [row_loss, column_loss, row_stats, column_stats] = forward_op().call(
        query, keys, temperature, query_ids, key_ids, soft_query, soft_keys, alpha, normalize, rows, columns,
        backend);
    ctx->save_for_backward({query, keys, temperature, or_empty(query_ids), or_empty(key_ids), or_empty(soft_query),
                            or_empty(soft_keys), row_stats, column_stats});
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["normalize"] = normalize;
    ctx->saved_data["backend"] = backend;
    ctx->mark_non_differentiable({row_stats, column_stats});
    ctx->set_materialize_grads(false);  // an unused direction's grad stays None, not a zero tensor
    return {row_loss, column_loss, row_stats, column_stats};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("fastadapter::contrastive_backward", "")
                         .typed<decltype(backward_impl)>();
    TORCH_CHECK_NOT_IMPLEMENTED(!at::GradMode::is_enabled(), "fastadapter.contrastive_loss: double backward "
                                "(create_graph=True) is not supported by the fused op; backend=\"eager\" is "
                                "differentiable to any order");
    torch::autograd::variable_list out(12);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    const auto s = ctx->get_saved_variables();
    // query, keys and temperature are the first three tensors passed, so needs_input_grad's edges 0-2.
    auto [grad_query, grad_keys, grad_temperature] = op.call(
        optional(grads[0]), optional(grads[1]), s[0], s[1], s[2], optional(s[3]), optional(s[4]), optional(s[5]),
        optional(s[6]), ctx->saved_data["alpha"].toDouble(), ctx->saved_data["normalize"].toBool(), s[7], s[8],
        ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2),
        ctx->saved_data["backend"].toStringRef());
    if (ctx->needs_input_grad(0)) out[0] = grad_query;
    if (ctx->needs_input_grad(1)) out[1] = grad_keys;
    if (ctx->needs_input_grad(2)) out[2] = grad_temperature;
    return out;
  }
};

ContrastiveForwardResult forward_autograd(const Tensor& query, const Tensor& keys, const Tensor& temperature,
                                          const OptTensor& query_ids, const OptTensor& key_ids,
                                          const OptTensor& soft_query, const OptTensor& soft_keys, double alpha,
                                          bool normalize, bool rows, bool columns, c10::string_view backend) {
  auto out = ContrastiveFunction::apply(query, keys, temperature, query_ids, key_ids, soft_query, soft_keys, alpha,
                                        normalize, rows, columns, std::string(backend));
  return {out[0], out[1], out[2], out[3]};
}

// Under torch.autocast the features run in the autocast dtype, as they would through a matmul; the temperature
// keeps its dtype and the losses come out float32, as autocast's policy for losses has them.
template <c10::DeviceType device>
ContrastiveForwardResult forward_autocast(const Tensor& query, const Tensor& keys, const Tensor& temperature,
                                          const OptTensor& query_ids, const OptTensor& key_ids,
                                          const OptTensor& soft_query, const OptTensor& soft_keys, double alpha,
                                          bool normalize, bool rows, bool columns, c10::string_view backend) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const auto type = at::autocast::get_lower_precision_fp_from_device_type(device);
  const auto cast = [type](const auto& t) { return at::autocast::cached_cast(type, t, device); };
  return forward_op().call(cast(query), cast(keys), temperature, query_ids, key_ids, cast(soft_query),
                           cast(soft_keys), alpha, normalize, rows, columns, backend);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastadapter, AutocastCPU, m) {
  m.impl("contrastive_forward", &forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fastadapter, AutocastCUDA, m) {
  m.impl("contrastive_forward", &forward_autocast<c10::DeviceType::CUDA>);
}

TORCH_LIBRARY_IMPL(fastadapter, CompositeExplicitAutograd, m) {
  m.impl("contrastive_forward", &forward_impl);
  m.impl("contrastive_backward", &backward_impl);
}

TORCH_LIBRARY_IMPL(fastadapter, Autograd, m) { m.impl("contrastive_forward", &forward_autograd); }

}  // namespace fastadapter
