// Block-wide reductions for the CUDA tile kernels (a block of kThreads threads walking one row of a tile).
#pragma once

#include <cstdint>

namespace fastadapter::gpu {

constexpr int kThreads = 256;

struct Max {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};
struct Sum {
  __device__ float operator()(float a, float b) const { return a + b; }
};

// Reduces v over the block (kThreads threads); every thread gets the result.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, Op op) {
  __shared__ float partial[kThreads / 32];
  __shared__ float result;
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffff, v, offset));
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = partial[0];
    for (int w = 1; w < kThreads / 32; ++w) total = op(total, partial[w]);
    result = total;
  }
  __syncthreads();
  const float out = result;
  __syncthreads();  // result and partial are reused by the next call
  return out;
}

// Whether (w, k) beats (v, i) in an argmax: larger, or equal with a lower index (-1: none yet).
__device__ __forceinline__ bool argmax_better(float v, int64_t i, float w, int64_t k) {
  return w > v || (w == v && k >= 0 && (i < 0 || k < i));
}

// The block's largest (value, index), the lowest index among equal values; every thread gets the result.
__device__ __forceinline__ void block_argmax(float& value, int64_t& index) {
  __shared__ float values[kThreads / 32];
  __shared__ int64_t indices[kThreads / 32];
  for (int offset = 16; offset > 0; offset /= 2) {
    const float w = __shfl_xor_sync(0xffffffff, value, offset);
    const int64_t k = __shfl_xor_sync(0xffffffff, index, offset);
    if (argmax_better(value, index, w, k)) value = w, index = k;
  }
  if (threadIdx.x % 32 == 0) values[threadIdx.x / 32] = value, indices[threadIdx.x / 32] = index;
  __syncthreads();
  value = values[0];
  index = indices[0];
  for (int w = 1; w < kThreads / 32; ++w) {
    if (argmax_better(value, index, values[w], indices[w])) value = values[w], index = indices[w];
  }
  __syncthreads();  // values and indices are reused by the next call
}

}  // namespace fastadapter::gpu
