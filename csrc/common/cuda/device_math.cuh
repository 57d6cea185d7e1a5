// Shared by the CUDA kernels: the activations and their derivatives as device functions, and warp reductions.
#pragma once

#include "../activation.h"

namespace fastadapter::gpu {

constexpr int kWarpSize = 32;

template <Activation A>
struct Act;

template <>
struct Act<Activation::Gelu> {
  static __device__ float value(float z) { return 0.5f * z * (1.f + erff(z * kSqrtHalf)); }
  static __device__ float grad(float z) {
    return 0.5f * (1.f + erff(z * kSqrtHalf)) + z * __expf(-0.5f * z * z) * kInvSqrt2Pi;
  }
};

template <>
struct Act<Activation::GeluTanh> {
  static __device__ float value(float z) {
    return 0.5f * z * (1.f + tanhf(kSqrt2OverPi * (z + kGeluTanhCubic * z * z * z)));
  }
  static __device__ float grad(float z) {
    const float t = tanhf(kSqrt2OverPi * (z + kGeluTanhCubic * z * z * z));
    return 0.5f * (1.f + t) + 0.5f * z * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kGeluTanhCubic * z * z);
  }
};

template <>
struct Act<Activation::Relu> {
  static __device__ float value(float z) { return z > 0.f ? z : 0.f; }
  static __device__ float grad(float z) { return z > 0.f ? 1.f : 0.f; }
};

template <>
struct Act<Activation::Silu> {
  static __device__ float value(float z) { return z / (1.f + __expf(-z)); }
  static __device__ float grad(float z) {
    const float s = 1.f / (1.f + __expf(-z));
    return s * (1.f + z * (1.f - s));
  }
};

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

}  // namespace fastadapter::gpu
