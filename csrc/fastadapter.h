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
  TORCH_CHECK(false, "fastadapter: unknown activation '", name,
              "'; expected one of gelu, gelu_tanh, relu, silu");
}

inline Norm parse_norm(const std::string& name) {
  if (name == "layernorm") return Norm::LayerNorm;
  if (name == "rmsnorm") return Norm::RMSNorm;
  TORCH_CHECK(false, "fastadapter: unknown norm '", name, "'; expected layernorm or rmsnorm");
}

// Checks shared by every device: h is (rows, r) contiguous, the norm parameters are (r,).
inline void check_norm_act_inputs(const at::Tensor& h, const at::Tensor& weight,
                                  const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(h.dim() == 2 && h.is_contiguous(), "fastadapter: h must be a contiguous 2-D tensor, got ",
              h.sizes());
  TORCH_CHECK(h.is_floating_point(), "fastadapter: h must be floating point, got ", h.scalar_type());
  const auto r = h.size(1);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == r, "fastadapter: norm weight must have shape (", r,
              ",), got ", weight.sizes());
  TORCH_CHECK(weight.device() == h.device(), "fastadapter: norm weight is on ", weight.device(),
              " but h is on ", h.device());
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == r, "fastadapter: norm bias must have shape (", r,
                ",), got ", bias->sizes());
    TORCH_CHECK(bias->device() == h.device(), "fastadapter: norm bias is on ", bias->device(),
                " but h is on ", h.device());
  }
}

// The norm parameters as contiguous float32 (bias undefined when absent): the kernels read them as float.
inline std::pair<at::Tensor, at::Tensor> float_norm_params(const at::Tensor& weight,
                                                           const c10::optional<at::Tensor>& bias) {
  return {weight.to(at::kFloat).contiguous(), bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor()};
}

inline void check_norm_act_backward_inputs(const at::Tensor& grad_a, const at::Tensor& h, const at::Tensor& mean,
                                           const at::Tensor& rstd, const at::Tensor& weight,
                                           const c10::optional<at::Tensor>& bias) {
  check_norm_act_inputs(h, weight, bias);
  TORCH_CHECK(grad_a.sizes() == h.sizes() && grad_a.scalar_type() == h.scalar_type(),
              "fastadapter: grad_a must match h in shape and dtype");
  TORCH_CHECK(mean.numel() == h.size(0) && rstd.numel() == h.size(0) && mean.scalar_type() == at::kFloat &&
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
