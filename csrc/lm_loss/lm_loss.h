// The LM loss op's C++ contract (schema.cpp): per token t with label y (not ignore_index), logits z = W h_t + b,
// loss_t = lse_t - (1 - eps) z_y - (eps / V) sum_v z_v (F.cross_entropy's label smoothing). Every backend supplies
// the forward and backward below and registers them in lm_loss_backends(): cpu here (cpu/), torch from Python
// (fastadapter/ops/lm_loss/torch_backend.py, with the math).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <tuple>

#include "../common/backend_table.h"

namespace fastadapter {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

using LmLossForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>;  // loss, lse, three grads
using LmLossBackwardResult = std::tuple<Tensor, Tensor, Tensor>;                 // grad hidden, weight, bias

using LmLossForward = LmLossForwardResult(const Tensor& hidden, const Tensor& weight, const OptTensor& bias,
                                          const Tensor& labels, double label_smoothing, int64_t ignore_index,
                                          c10::string_view reduction, bool hidden_grad, bool weight_grad,
                                          bool bias_grad);
using LmLossBackward = LmLossBackwardResult(const Tensor& grad_loss, const Tensor& hidden, const Tensor& weight,
                                            const OptTensor& bias, const Tensor& labels, const Tensor& lse,
                                            double label_smoothing, int64_t ignore_index, bool hidden_grad,
                                            bool weight_grad, bool bias_grad);

struct LmLossImpl {
  std::function<LmLossForward> forward;
  std::function<LmLossBackward> backward;
};

BackendTable<LmLossImpl>& lm_loss_backends();

// Shapes, dtypes, devices and options (checks.cpp); label values are checked in Python, on CPU.
void check_lm_loss_inputs(const Tensor& hidden, const Tensor& weight, const OptTensor& bias, const Tensor& labels,
                          double label_smoothing, c10::string_view reduction);

// Tokens per chunk so that a chunk's float32 logits stay near 32 MiB (the torch backend's rule too).
int64_t lm_loss_chunk_rows(int64_t vocab);

}  // namespace fastadapter
