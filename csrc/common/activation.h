// Shared by every op's CPU and CUDA kernels: the activation and norm names of the op contracts, parsed once per
// call into enums, and a dispatch that turns them into compile-time tags so each kernel is specialised per pair.
#pragma once

#include <c10/util/Exception.h>

#include <string>
#include <type_traits>

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

// Calls f(activation_tag, norm_tag) with compile-time tags.
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
