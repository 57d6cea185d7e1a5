// Shared by the CPU and CUDA kernels: the activation and norm names of the op contract.
#pragma once

#include <ATen/ATen.h>
#include <string>

namespace fastadapter {

enum class Activation { Gelu, GeluTanh, Relu, Silu };
enum class Norm { LayerNorm, RMSNorm };

inline Activation parse_activation(const std::string& name) {
  if (name == "gelu") return Activation::Gelu;
  if (name == "gelu_tanh") return Activation::GeluTanh;
  if (name == "relu") return Activation::Relu;
  if (name == "silu") return Activation::Silu;
  TORCH_CHECK_VALUE(false, "fastadapter: unknown activation '", name,
                    "'; expected one of gelu, gelu_tanh, relu, silu");
}

inline Norm parse_norm(const std::string& name) {
  if (name == "layernorm") return Norm::LayerNorm;
  if (name == "rmsnorm") return Norm::RMSNorm;
  TORCH_CHECK_VALUE(false, "fastadapter: unknown norm '", name, "'; expected layernorm or rmsnorm");
}

// The adapter op's input checks (csrc/checks.cpp): dtypes, devices and shapes against x and w_down, the
// activation and norm names and eps. Raises TypeError or ValueError naming the argument; sizes may be symbolic.
void check_adapter_inputs(const at::Tensor& x, const at::Tensor& w_down, const std::optional<at::Tensor>& b_down,
                          const at::Tensor& norm_weight, const std::optional<at::Tensor>& norm_bias,
                          const at::Tensor& w_up, const std::optional<at::Tensor>& b_up, c10::string_view activation,
                          c10::string_view norm, double eps);

// Checks shared by every device: h is (rows, r) contiguous, the norm parameters are (r,) in h's dtype (as the
// adapter op's are: the CUDA kernels read them as stored).
inline void check_norm_act_inputs(const at::Tensor& h, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK_VALUE(h.dim() == 2 && h.is_contiguous(), "fastadapter: h must be a contiguous 2-D tensor, got ",
                    h.sizes());
  TORCH_CHECK_TYPE(h.is_floating_point(), "fastadapter: h must be floating point, got ", h.scalar_type());
  const auto r = h.size(1);
  TORCH_CHECK_VALUE(r >= 1, "fastadapter: h must have at least one column (the norm is over its rows)");
  const auto check_param = [&](const at::Tensor& p, const char* name) {
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

inline void check_norm_act_backward_inputs(const at::Tensor& grad_a, const at::Tensor& h, const at::Tensor& mean,
                                           const at::Tensor& rstd, const at::Tensor& weight,
                                           const c10::optional<at::Tensor>& bias) {
  check_norm_act_inputs(h, weight, bias);
  TORCH_CHECK_VALUE(grad_a.sizes() == h.sizes() && grad_a.scalar_type() == h.scalar_type(),
                    "fastadapter: grad_a must match h in shape and dtype");
  TORCH_CHECK_VALUE(mean.numel() == h.size(0) && rstd.numel() == h.size(0) && mean.scalar_type() == at::kFloat &&
                        rstd.scalar_type() == at::kFloat,
                    "fastadapter: mean and rstd must be float32 with one entry per row of h");
}

}  // namespace fastadapter

namespace fastadapter {

// Calls f(activation_tag, norm_tag) with compile-time tags, so each kernel is specialised per pair.
template <typename F>
void dispatch_activation_norm(Activation act, Norm norm, F&& f) {
  auto with_norm = [&](auto act_tag) {
    if (norm == Norm::LayerNorm) {
      f(act_tag, std::integral_constant<Norm, Norm::LayerNorm>{});
    } else {
      f(act_tag, std::integral_constant<Norm, Norm::RMSNorm>{});
    }
  };
  switch (act) {
    case Activation::Gelu: with_norm(std::integral_constant<Activation, Activation::Gelu>{}); break;
    case Activation::GeluTanh: with_norm(std::integral_constant<Activation, Activation::GeluTanh>{}); break;
    case Activation::Relu: with_norm(std::integral_constant<Activation, Activation::Relu>{}); break;
    case Activation::Silu: with_norm(std::integral_constant<Activation, Activation::Silu>{}); break;
  }
}

constexpr float kSqrtHalf = 0.70710678118654752f;    // 1/sqrt(2)
constexpr float kInvSqrt2Pi = 0.39894228040143268f;  // 1/sqrt(2*pi)
constexpr float kSqrt2OverPi = 0.79788456080286536f; // sqrt(2/pi)
constexpr float kGeluTanhCubic = 0.044715f;

}  // namespace fastadapter

namespace fastadapter {

// The residual's (rows, D) pass, folded into the CPU norm pass's row loop so that this memory-bound copy
// overlaps the compute-bound norm+activation. Forward: dest = source + bias (y starts as x + b_up and the
// up-projection GEMM accumulates into it). Backward: dest = source (grad_x starts as grad_y) and the
// column sums of source (the up-projection bias grad) come back. bias may be undefined.
struct ResidualRows {
  at::Tensor source;
  at::Tensor bias;
  at::Tensor dest;
};

// The CPU kernels (csrc/cpu/norm_act.cpp), writing into outputs the caller allocated: the orchestration
// (csrc/adapter.cpp) folds the residual pass into them. grad_h may alias grad_a (computed in place); residual
// may be nullptr. The backward returns the column sums as the grads they are: of the norm weight and bias (in
// the weight's dtype), of grad_h (the down-projection bias grad, in h's dtype) and of the residual source (the
// up-projection bias grad, in its dtype; undefined without residual).
struct NormActBackwardSums {
  at::Tensor grad_weight, grad_bias, grad_h_sum, residual_sum;
};
void norm_act_forward_cpu_into(const at::Tensor& h, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               c10::string_view activation, c10::string_view norm, double eps, at::Tensor& a,
                               at::Tensor& mean, at::Tensor& rstd, const ResidualRows* residual);
NormActBackwardSums norm_act_backward_cpu_into(const at::Tensor& grad_a, const at::Tensor& h, const at::Tensor& mean,
                                               const at::Tensor& rstd, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& bias, c10::string_view activation,
                                               c10::string_view norm, at::Tensor& a, at::Tensor& grad_h,
                                               const ResidualRows* residual);

}  // namespace fastadapter

namespace fastadapter {

#ifdef FASTADAPTER_WITH_CUDA
// Packs per lane the CUDA row-in-registers kernels would use for 16-byte-aligned rows of r elements of this
// size (0: the general kernels run). For tests: it is the one gate of that choice, env switch included.
int cuda_packed_rows_chunks(int64_t r, int64_t element_size, bool backward);
#endif

// Memory for the CPU adapter (csrc/cpu/memory.cpp). Fresh multi-megabyte memory faults once per 4 KiB page
// on first touch; turning the cache off costs the op 0.75x -> 0.89x of eager (benchmarks/results/), so the op's
// large tensors come from a caching allocator of huge-page blocks.
// empty_cpu_large: an empty contiguous CPU tensor; from 2 MiB up, from that allocator.
at::Tensor empty_cpu_large(at::IntArrayRef sizes, at::ScalarType dtype);
// Frees the allocator's cached (unused) blocks; returns the bytes released.
int64_t release_cpu_cache();

}  // namespace fastadapter
