// Input checks shared by the ops over two sets of feature rows (contrastive, itm): each error starts with the
// op's prefix ("fastadapter.<op>: ") and names the argument, TypeError for a dtype, ValueError for the rest.
// Sizes may be symbolic (the fake kernels run these under torch.compile).
#pragma once

#include <ATen/ATen.h>

#include "format.h"

namespace fastadapter {

// A (n, d) float32/bf16/fp16 dense tensor with n, d > 0, on first's device.
inline void check_feature_rows(const char* op, const char* name, const at::Tensor& t, const at::Tensor& first,
                               const char* first_name) {
  const auto type = t.scalar_type();
  TORCH_CHECK_TYPE(t.is_floating_point(), op, name, " must be a floating-point tensor, got ", dtype_name(type));
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf, op, name, " is ",
                   dtype_name(type), "; supported dtypes are float32, bfloat16 and float16 (the kernels compute in "
                   "float32; use backend='eager' for float64)");
  TORCH_CHECK_VALUE(t.dim() == 2, op, name, " must have shape (n, d), got ", shape_str(t.sym_sizes()));
  TORCH_CHECK_VALUE(t.device() == first.device(), op, "device mismatch: ", first_name, " is on ", first.device(),
                    " but ", name, " is on ", t.device());
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, op, name, " must be a dense (strided) tensor, got layout ",
                    t.layout());
  TORCH_CHECK_VALUE(t.sym_size(0) != 0 && t.sym_size(1) != 0, op, name, " must have at least one row and one "
                    "column, got shape ", shape_str(t.sym_sizes()));
}

// Integer ids, one per row of features, on their device.
inline void check_row_ids(const char* op, const char* name, const at::Tensor& ids, const at::Tensor& features,
                          const char* features_name) {
  const auto type = ids.scalar_type();
  TORCH_CHECK_TYPE(at::isIntegralType(type, /*includeBool=*/false), op, name, " must be an integer tensor, got ",
                   dtype_name(type));
  TORCH_CHECK_VALUE(ids.dim() == 1 && ids.sym_size(0) == features.sym_size(0), op, name, " must have shape (",
                    features.sym_size(0), ",), one id per row of ", features_name, ", got ",
                    shape_str(ids.sym_sizes()));
  TORCH_CHECK_VALUE(ids.device() == features.device(), op, "device mismatch: ", features_name, " is on ",
                    features.device(), " but ", name, " is on ", ids.device());
}

// Two feature sets of one dtype and width.
inline void check_feature_pair(const char* op, const at::Tensor& a, const char* a_name, const at::Tensor& b,
                               const char* b_name) {
  check_feature_rows(op, a_name, a, a, a_name);
  check_feature_rows(op, b_name, b, a, a_name);
  TORCH_CHECK_TYPE(b.scalar_type() == a.scalar_type(), op, "dtype mismatch: ", a_name, " is ",
                   dtype_name(a.scalar_type()), " but ", b_name, " is ", dtype_name(b.scalar_type()));
  TORCH_CHECK_VALUE(b.sym_size(1) == a.sym_size(1), op, a_name, " and ", b_name, " must have the same feature "
                    "width, got ", a_name, " ", shape_str(a.sym_sizes()), " and ", b_name, " ",
                    shape_str(b.sym_sizes()));
}

// The temperature as the ops take it: a 0-d floating-point tensor on the features' device.
inline void check_temperature_tensor(const char* op, const at::Tensor& temperature, const at::Tensor& like,
                                     const char* like_name) {
  TORCH_CHECK_TYPE(temperature.is_floating_point(), op, "temperature must be a floating-point tensor, got ",
                   dtype_name(temperature.scalar_type()));
  TORCH_CHECK_VALUE(temperature.dim() == 0 && temperature.device() == like.device(), op, "temperature must be "
                    "a 0-d tensor on ", like_name, "'s device (", like.device(), "), got shape ",
                    shape_str(temperature.sym_sizes()), " on ", temperature.device());
}

}  // namespace fastadapter
