// The LM loss op's input checks, run by the op and by its fake kernel (sizes may be symbolic).
#include <ATen/ATen.h>

#include <algorithm>

#include "../common/format.h"
#include "lm_loss.h"

namespace fastadapter {

namespace {
constexpr const char* kOp = "fastadapter.lm_loss: ";
}

int64_t lm_loss_chunk_rows(int64_t vocab) {
  return std::max<int64_t>(16, (int64_t(1) << 23) / std::max<int64_t>(vocab, 1));
}

void check_lm_loss_inputs(const Tensor& hidden, const Tensor& weight, const OptTensor& bias, const Tensor& labels,
                          double label_smoothing, c10::string_view reduction) {
  const auto type = hidden.scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf, kOp, "hidden is ",
                   dtype_name(type), "; supported dtypes are float32, bfloat16 and float16 (use backend='eager' "
                   "for others)");
  TORCH_CHECK_TYPE(weight.scalar_type() == type && (!bias || bias->scalar_type() == type), kOp, "dtype mismatch: "
                   "hidden is ", dtype_name(type), " but weight is ", dtype_name(weight.scalar_type()),
                   bias ? " and bias is " + dtype_name(bias->scalar_type()) : std::string());
  TORCH_CHECK_VALUE(hidden.dim() == 2 && weight.dim() == 2 && weight.sym_size(1) == hidden.sym_size(1), kOp,
                    "hidden must be (T, H) and weight (V, H) with the same H, got hidden ",
                    shape_str(hidden.sym_sizes()), " and weight ", shape_str(weight.sym_sizes()));
  TORCH_CHECK_VALUE(weight.sym_size(0) != 0, kOp, "the vocabulary is empty (weight has 0 rows)");
  TORCH_CHECK_VALUE(!bias || (bias->dim() == 1 && bias->sym_size(0) == weight.sym_size(0)), kOp, "bias must have "
                    "shape (", weight.sym_size(0), ",), got ", bias ? shape_str(bias->sym_sizes()) : "");
  TORCH_CHECK_TYPE(labels.scalar_type() == at::kLong, kOp, "labels must be int64 (torch.long), got ",
                   dtype_name(labels.scalar_type()));
  TORCH_CHECK_VALUE(labels.dim() == 1 && labels.sym_size(0) == hidden.sym_size(0), kOp, "labels must have one "
                    "entry per token (", hidden.sym_size(0), "), got ", shape_str(labels.sym_sizes()));
  for (const Tensor* t : {&weight, &labels}) {
    TORCH_CHECK_VALUE(t->device() == hidden.device(), kOp, "device mismatch: hidden is on ", hidden.device(),
                      " but an argument is on ", t->device());
  }
  TORCH_CHECK_VALUE(!bias || bias->device() == hidden.device(), kOp, "device mismatch: hidden is on ",
                    hidden.device(), " but bias is on ", bias ? bias->device() : hidden.device());
  TORCH_CHECK_VALUE(label_smoothing >= 0 && label_smoothing < 1, kOp, "label_smoothing must be in [0, 1), got ",
                    label_smoothing);
  TORCH_CHECK_VALUE(reduction == "mean" || reduction == "sum" || reduction == "none", kOp, "unknown reduction '",
                    std::string(reduction), "'; expected 'mean', 'sum' or 'none'");
}

}  // namespace fastadapter
