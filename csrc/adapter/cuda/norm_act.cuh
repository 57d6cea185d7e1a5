// Shared by the CUDA kernels of the adapter's fused middle (norm_act_forward.cu, norm_act_backward.cu): 16-byte
// row packs and launch helpers (activations and warp reductions: csrc/common/cuda/device_math.cuh). Each kernel
// file compiles on its own, so the build runs them in parallel.
#pragma once

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string_view>
#include <type_traits>

#include "../../common/cuda/device_math.cuh"
#include "../adapter.h"

namespace fastadapter::gpu {

// Row-in-registers kernels, for rows whose r elements split into 16-byte packs (r % pack == 0, 16-byte aligned
// rows) and fit CHUNKS packs per lane: one 16-byte load per pack instead of 2- or 4-byte loads, and h and
// grad_a read from memory once instead of once per pass. Lane l owns packs l, l + 32, ...; so it owns the
// same columns in every row and keeps their norm parameters and parameter-grad sums in registers.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / sizeof(T);
  T v[kSize];
};

constexpr int kMaxChunks = 4;  // packs per lane: r up to 4 * 32 * 8 = 1024 in 16-bit types, 512 in float32
// Backward keeps ~7 arrays per pack in registers: with 4 packs per lane it needs 255 registers and spills
// (nvcc -Xptxas -v, sm_90); with 2, ~166.
constexpr int kMaxBackwardChunks = 2;

// Calls f(c, p) for the lane's packs: chunk c = 0 .. CHUNKS-1 holds pack p = lane + 32c, where p < packs.
// Unrolled, so c is a constant and the per-chunk arrays stay in registers.
template <int CHUNKS, typename F>
__device__ __forceinline__ void for_each_pack(int packs, int lane, F&& f) {
#pragma unroll
  for (int c = 0; c < CHUNKS; ++c) {
    const int p = lane + c * kWarpSize;
    if (p < packs) f(c, p);
  }
}

template <typename T, int CHUNKS>
__device__ __forceinline__ void load_row(const T* row, int packs, int lane, float (&x)[CHUNKS][Pack<T>::kSize]) {
  for_each_pack<CHUNKS>(packs, lane, [&](int c, int p) {
    const Pack<T> pack = reinterpret_cast<const Pack<T>*>(row)[p];
#pragma unroll
    for (int k = 0; k < Pack<T>::kSize; ++k) x[c][k] = static_cast<float>(pack.v[k]);
  });
}

// The norm parameters of the lane's columns, read once per kernel (stored in h's dtype, held as float).
template <typename T, int CHUNKS, int V>
__device__ __forceinline__ void load_params(const T* w, const T* b, int packs, int lane, float (&wr)[CHUNKS][V],
                                            float (&br)[CHUNKS][V]) {
#pragma unroll
  for (int c = 0; c < CHUNKS; ++c) {
    const int p = lane + c * kWarpSize;
#pragma unroll
    for (int k = 0; k < V; ++k) {
      wr[c][k] = p < packs ? static_cast<float>(w[p * V + k]) : 0.f;
      br[c][k] = p < packs && b ? static_cast<float>(b[p * V + k]) : 0.f;
    }
  }
}

// The row-in-registers kernels are opt-in (FASTADAPTER_CUDA_PACKED_ROWS=1) until a GPU run has checked them
// against the reference and timed them (benchmarks/gpu/run.sh runs both kinds). The variable is read once, at
// the first call; set_cuda_packed_rows switches it afterwards (tests and suites, in one process): no getenv per
// call, so a call's host path and a captured CUDA graph do not depend on the environment.
std::atomic<bool>& packed_rows_switch();
inline bool packed_rows_enabled() { return packed_rows_switch().load(std::memory_order_relaxed); }

// Packs per lane the row-in-registers kernels need for these tensors (1, 2 or 4), or 0 where they do not
// apply: not enabled, r not a whole number of packs, a row not 16-byte aligned, or more than max_chunks packs
// per lane.
inline int vector_chunks(int64_t r, size_t element_size, std::initializer_list<const void*> rows, int max_chunks) {
  if (!packed_rows_enabled()) return 0;
  const int64_t pack = 16 / static_cast<int64_t>(element_size);
  if (r % pack != 0) return 0;
  for (const void* p : rows) {
    if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 0;
  }
  const int64_t chunks = (r / pack + kWarpSize - 1) / kWarpSize;
  if (chunks > max_chunks) return 0;
  return chunks <= 1 ? 1 : chunks <= 2 ? 2 : kMaxChunks;
}

// Calls f(std::integral_constant<int, CHUNKS>) for CHUNKS in {1, 2, 4}, instantiating only those <= MAX.
template <int MAX, typename F>
void dispatch_chunks(int chunks, F&& f) {
  if (chunks == 1) {
    f(std::integral_constant<int, 1>{});
  } else if (chunks == 2) {
    f(std::integral_constant<int, 2>{});
  } else if constexpr (MAX >= kMaxChunks) {
    f(std::integral_constant<int, kMaxChunks>{});
  }
}

// Calls f(activation_tag, norm_tag, chunks_tag) with compile-time tags and checks the launch: chunks_tag is
// the packs per lane of the row-in-registers kernel to launch, or 0 for the general kernel.
template <int MAX, typename F>
void dispatch_kernel(Activation act, Norm norm, int chunks, F&& f) {
  dispatch_activation_norm(act, norm, [&](auto act_tag, auto norm_tag) {
    if (chunks == 0) {
      f(act_tag, norm_tag, std::integral_constant<int, 0>{});
    } else {
      dispatch_chunks<MAX>(chunks, [&](auto chunks_tag) { f(act_tag, norm_tag, chunks_tag); });
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// The row-in-registers kernel where rows split into CHUNKS packs per lane, else the general one (both take the
// same arguments; the first is named at CHUNKS >= 1 only to have a type when unused).
template <int kChunks, typename Kernel>
constexpr Kernel pick_kernel(Kernel row_in_registers, Kernel general) {
  return kChunks > 0 ? row_in_registers : general;
}

inline int grid_size(int64_t rows, int rows_per_block, int blocks_per_sm) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t needed = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, static_cast<int64_t>(sms) * blocks_per_sm)));
}

}  // namespace fastadapter::gpu
