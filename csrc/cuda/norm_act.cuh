// Shared by the CUDA kernels of the adapter's fused middle (norm_act_forward.cu, norm_act_backward.cu): the
// activations, the warp reduction and the grid size. Each kernel file compiles on its own, so
// the build runs them in parallel.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <cstdint>

#include "../fastadapter.h"

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

inline int grid_size(int64_t rows, int rows_per_block, int blocks_per_sm) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t needed = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, static_cast<int64_t>(sms) * blocks_per_sm)));
}

}  // namespace fastadapter::gpu
