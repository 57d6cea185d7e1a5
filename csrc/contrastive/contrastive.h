// The contrastive op's C++ contract (schema.cpp): per-row and per-column cross entropies of the logits
// S = <q_hat, k_hat> / tau against targets uniform over the positives (the diagonal, or equal ids), mixed with
// alpha * softmax of the soft features' logits when given. Every backend supplies the whole forward and backward
// below and registers them in contrastive_backends(): cpu here in C++ (cpu/), triton and torch from Python
// (kernels/contrastive.py, fastadapter/ops/contrastive/). Forward returns (row_loss, column_loss, row_stats,
// column_stats), the stats float32 (3, n): log-sum-exp, soft log-sum-exp, positive count; backward takes them.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <tuple>

#include "../common/backend_table.h"

namespace fastadapter {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

using ContrastiveForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor>;  // row/column loss, row/column stats
using ContrastiveBackwardResult = std::tuple<Tensor, Tensor, Tensor>;         // grad query, keys, temperature

using ContrastiveForward = ContrastiveForwardResult(const Tensor& query, const Tensor& keys, const Tensor& temperature,
                                                    const OptTensor& query_ids, const OptTensor& key_ids,
                                                    const OptTensor& soft_query, const OptTensor& soft_keys,
                                                    double alpha, bool normalize, bool rows, bool columns);
using ContrastiveBackward = ContrastiveBackwardResult(
    const OptTensor& grad_row_loss, const OptTensor& grad_column_loss, const Tensor& query, const Tensor& keys,
    const Tensor& temperature, const OptTensor& query_ids, const OptTensor& key_ids, const OptTensor& soft_query,
    const OptTensor& soft_keys, double alpha, bool normalize, const Tensor& row_stats, const Tensor& column_stats,
    bool query_grad, bool keys_grad, bool temperature_grad);

struct ContrastiveImpl {
  std::function<ContrastiveForward> forward;
  std::function<ContrastiveBackward> backward;
};

BackendTable<ContrastiveImpl>& contrastive_backends();

// The op's input checks (checks.cpp): dtypes, devices and shapes, which inputs come in pairs, alpha and the
// directions. Values are not read here (that would sync a GPU); fastadapter/ops/contrastive/ checks them.
void check_contrastive_inputs(const Tensor& query, const Tensor& keys, const Tensor& temperature,
                              const OptTensor& query_ids, const OptTensor& key_ids, const OptTensor& soft_query,
                              const OptTensor& soft_keys, double alpha, bool rows, bool columns);
void check_contrastive_backward_inputs(const OptTensor& grad_row_loss, const OptTensor& grad_column_loss,
                                       const Tensor& query, const Tensor& keys, const Tensor& row_stats,
                                       const Tensor& column_stats);

}  // namespace fastadapter
