// The contrastive op's input checks, run by the op itself and by its fake kernel under torch.compile (sizes may
// be symbolic). Each error names the argument: TypeError for a dtype, ValueError for a shape, device or option.
// Tensor values (the temperature, whether every query has a positive) are checked in Python, where the cost of
// reading them is known (fastadapter/ops/contrastive/__init__.py).
#include <ATen/ATen.h>

#include <string>

#include "../common/feature_checks.h"
#include "../common/format.h"
#include "contrastive.h"

namespace fastadapter {
namespace {

constexpr const char* kOp = "fastadapter.contrastive_loss: ";

}  // namespace

void check_contrastive_inputs(const Tensor& query, const Tensor& keys, const Tensor& temperature,
                              const OptTensor& query_ids, const OptTensor& key_ids, const OptTensor& soft_query,
                              const OptTensor& soft_keys, double alpha, bool rows, bool columns) {
  check_feature_pair(kOp, query, "query", keys, "keys");
  check_temperature_tensor(kOp, temperature, query, "query");
  TORCH_CHECK_VALUE(query_ids.has_value() == key_ids.has_value(), kOp, "give both query_ids and key_ids, or "
                    "neither (then the positives are the diagonal)");
  if (query_ids) {
    check_row_ids(kOp, "query_ids", *query_ids, query, "query");
    check_row_ids(kOp, "key_ids", *key_ids, keys, "keys");
  } else {
    TORCH_CHECK_VALUE(query.sym_size(0) == keys.sym_size(0), kOp, "without ids the positives are the diagonal, so "
                      "query and keys need the same count; got ", query.sym_size(0), " queries and ",
                      keys.sym_size(0), " keys (pass query_ids and key_ids)");
  }
  TORCH_CHECK_VALUE(alpha >= 0 && alpha <= 1, kOp, "alpha must be in [0, 1], got ", alpha);
  TORCH_CHECK_VALUE(soft_query.has_value() == soft_keys.has_value(), kOp, "give both soft features (soft_query "
                    "and soft_keys, the momentum features), or neither");
  TORCH_CHECK_VALUE(soft_query.has_value() == (alpha > 0), kOp, soft_query ? "soft features were given with "
                    "alpha = 0, which ignores them; pass alpha > 0 or leave them out" : "alpha > 0 needs the soft "
                    "features (soft_query and soft_keys) it mixes into the targets");
  if (soft_query) {
    check_feature_rows(kOp, "soft_query", *soft_query, query, "query");
    check_feature_rows(kOp, "soft_keys", *soft_keys, query, "query");
    TORCH_CHECK_VALUE(soft_query->sym_size(0) == query.sym_size(0) && soft_keys->sym_size(0) == keys.sym_size(0) &&
                          soft_query->sym_size(1) == soft_keys->sym_size(1),
                      kOp, "soft_query and soft_keys must have one row per query and per key and the same width; "
                      "got soft_query ", shape_str(soft_query->sym_sizes()), " and soft_keys ",
                      shape_str(soft_keys->sym_sizes()), " for query ", shape_str(query.sym_sizes()), " and keys ",
                      shape_str(keys.sym_sizes()));
  }
  TORCH_CHECK_VALUE(rows || columns, kOp, "at least one direction (rows or columns) must be asked for");
}

void check_contrastive_backward_inputs(const OptTensor& grad_row_loss, const OptTensor& grad_column_loss,
                                       const Tensor& query, const Tensor& keys, const Tensor& row_stats,
                                       const Tensor& column_stats) {
  const auto check_stats = [](const char* name, const Tensor& stats, const Tensor& features) {
    TORCH_CHECK_VALUE(stats.scalar_type() == at::kFloat && stats.dim() == 2 && stats.sym_size(0) == 3 &&
                          (stats.sym_size(1) == 0 || stats.sym_size(1) == features.sym_size(0)),
                      kOp, name, " must be the forward's float32 (3, n) statistics, got ",
                      shape_str(stats.sym_sizes()));
  };
  check_stats("row_stats", row_stats, query);
  check_stats("column_stats", column_stats, keys);
  const auto check_grad = [](const char* name, const OptTensor& grad, const Tensor& stats) {
    TORCH_CHECK_VALUE(!grad || (grad->dim() == 1 && grad->sym_size(0) == stats.sym_size(1)), kOp, name,
                      " must have one entry per loss of its direction (", stats.sym_size(1), ")");
  };
  check_grad("grad_row_loss", grad_row_loss, row_stats);
  check_grad("grad_column_loss", grad_column_loss, column_stats);
}

}  // namespace fastadapter
