// The adapter op's input checks: one source of truth, run by the op itself (so a direct
// torch.ops.fastadapter.adapter_forward call is checked too) and by its fake kernel under torch.compile,
// where sizes may be symbolic. Each error names the argument; a wrong dtype raises TypeError, a wrong shape,
// device or option ValueError. Comparing symbolic sizes guards on them, as ATen's own checks do. Messages are
// built only on failure (TORCH_CHECK's arguments), so a good call pays for the comparisons alone.
#include <ATen/ATen.h>

#include <string>

#include "../common/format.h"
#include "adapter.h"

namespace fastadapter {
namespace {

void check_tensor(const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK_TYPE(t.is_floating_point(), "fastadapter.adapter: ", name, " must be a floating-point tensor, got ",
                   dtype_name(t.scalar_type()));
  const auto type = t.scalar_type();
  TORCH_CHECK_TYPE(type == at::kFloat || type == at::kBFloat16 || type == at::kHalf, "fastadapter.adapter: ", name,
                   " is ", dtype_name(type), "; supported dtypes are float32, bfloat16 and float16 (the kernels "
                   "compute in float32; use backend='eager' for float64)");
  TORCH_CHECK_TYPE(type == x.scalar_type(), "fastadapter.adapter: dtype mismatch: x is ",
                   dtype_name(x.scalar_type()), " but ", name, " is ", dtype_name(type));
  TORCH_CHECK_VALUE(t.device() == x.device(), "fastadapter.adapter: device mismatch: x is on ", x.device(), " but ",
                    name, " is on ", t.device());
  TORCH_CHECK_VALUE(t.layout() == at::kStrided, "fastadapter.adapter: ", name,
                    " must be a dense (strided) tensor, got layout ", t.layout(), " (call .to_dense() first)");
}

void check_shape(const char* name, const at::Tensor& t, std::initializer_list<c10::SymInt> expected,
                 const c10::SymInt& width, const c10::SymInt& r) {
  const auto sizes = t.sym_sizes();
  bool ok = sizes.size() == expected.size();
  for (size_t i = 0; ok && i < sizes.size(); ++i) ok = sizes[i] == expected.begin()[i];
  TORCH_CHECK_VALUE(ok, "fastadapter.adapter: ", name, " must have shape ",
                    shape_str(c10::SymIntArrayRef(expected.begin(), expected.size())), " (D=", width, ", r=", r,
                    "), got ", shape_str(sizes));
}

}  // namespace

void check_adapter_inputs(const at::Tensor& x, const at::Tensor& w_down, const std::optional<at::Tensor>& b_down,
                          const at::Tensor& norm_weight, const std::optional<at::Tensor>& norm_bias,
                          const at::Tensor& w_up, const std::optional<at::Tensor>& b_up, c10::string_view activation,
                          c10::string_view norm, double eps) {
  const std::pair<const char*, const at::Tensor*> tensors[] = {
      {"x", &x},
      {"w_down", &w_down},
      {"b_down", b_down ? &*b_down : nullptr},
      {"norm_weight", &norm_weight},
      {"norm_bias", norm_bias ? &*norm_bias : nullptr},
      {"w_up", &w_up},
      {"b_up", b_up ? &*b_up : nullptr}};
  for (const auto& [name, t] : tensors) {
    if (t != nullptr) check_tensor(name, *t, x);
  }
  TORCH_CHECK_VALUE(x.dim() >= 1, "fastadapter.adapter: x must have shape (..., D), got a 0-d tensor");
  const c10::SymInt width = x.sym_size(-1);
  TORCH_CHECK_VALUE(w_down.dim() == 2 && w_down.sym_size(1) == width, "fastadapter.adapter: w_down must have "
                    "shape (r, D=", width, "), got ", shape_str(w_down.sym_sizes()));
  const c10::SymInt r = w_down.sym_size(0);
  TORCH_CHECK_VALUE(r != 0, "fastadapter.adapter: the bottleneck size must be at least 1 (w_down has 0 rows)");
  if (b_down) check_shape("b_down", *b_down, {r}, width, r);
  check_shape("norm_weight", norm_weight, {r}, width, r);
  if (norm_bias) check_shape("norm_bias", *norm_bias, {r}, width, r);
  check_shape("w_up", w_up, {width, r}, width, r);
  if (b_up) check_shape("b_up", *b_up, {width}, width, r);
  parse_activation(std::string(activation));
  parse_norm(std::string(norm));
  TORCH_CHECK_VALUE(eps > 0, "fastadapter.adapter: eps must be positive, got ", eps);
}

void check_norm_act_inputs(const Tensor& h, const Tensor& weight, const OptTensor& bias) {
  TORCH_CHECK_VALUE(h.dim() == 2 && h.is_contiguous(), "fastadapter: h must be a contiguous 2-D tensor, got ",
                    h.sizes());
  TORCH_CHECK_TYPE(h.is_floating_point(), "fastadapter: h must be floating point, got ", h.scalar_type());
  const auto r = h.size(1);
  TORCH_CHECK_VALUE(r >= 1, "fastadapter: h must have at least one column (the norm is over its rows)");
  const auto check_param = [&](const Tensor& p, const char* name) {
    TORCH_CHECK_VALUE(p.dim() == 1 && p.size(0) == r, "fastadapter: norm ", name, " must have shape (", r, ",), got ",
                      p.sizes());
    TORCH_CHECK_VALUE(p.device() == h.device(), "fastadapter: norm ", name, " is on ", p.device(), " but h is on ",
                      h.device());
    TORCH_CHECK_TYPE(p.scalar_type() == h.scalar_type(), "fastadapter: norm ", name, " is ", p.scalar_type(),
                     " but h is ", h.scalar_type(), "; they must match");
  };
  check_param(weight, "weight");
  if (bias.has_value()) check_param(*bias, "bias");
}

void check_norm_act_backward_inputs(const Tensor& grad_a, const Tensor& h, const Tensor& mean, const Tensor& rstd,
                                    const Tensor& weight, const OptTensor& bias) {
  check_norm_act_inputs(h, weight, bias);
  TORCH_CHECK_VALUE(grad_a.sizes() == h.sizes() && grad_a.scalar_type() == h.scalar_type(),
                    "fastadapter: grad_a must match h in shape and dtype");
  TORCH_CHECK_VALUE(mean.numel() == h.size(0) && rstd.numel() == h.size(0) && mean.scalar_type() == at::kFloat &&
                        rstd.scalar_type() == at::kFloat,
                    "fastadapter: mean and rstd must be float32 with one entry per row of h");
}

}  // namespace fastadapter
