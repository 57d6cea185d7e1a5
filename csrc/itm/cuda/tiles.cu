// The ITM ops' CUDA tile kernels (declared in tiles.cuh): a block per row of a tile, threads strided over its
// columns (coalesced), a block reduction at the end of the row.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include "../../common/counter_noise.h"
#include "../../common/cuda/block_reduce.cuh"
#include "tiles.cuh"

namespace fastadapter::gpu {
namespace {

__device__ float inv_of(const float* inv_norm, int64_t index) { return inv_norm ? inv_norm[index] : 1.f; }

__device__ bool is_positive(const TileSide& a, const TileSide& b, int64_t i, int64_t j) {
  return a.ids ? a.ids[a.offset + i] == b.ids[b.offset + j] : a.offset + i == b.offset + j;
}

__global__ void margin_rows_kernel(const float* __restrict__ tile, TileSide a, TileSide b, float margin,
                                   float* row_loss) {
  const int64_t i = blockIdx.x, nb = b.count;
  const float sa = inv_of(a.inv_norm, a.offset + i);
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < nb; j += kThreads) {
    const float s = tile[i * nb + j] * sa * inv_of(b.inv_norm, b.offset + j);
    sum += is_positive(a, b, i, j) ? 1.f - s : fmaxf(s - margin, 0.f);
  }
  sum = block_reduce(sum, Sum());
  if (threadIdx.x == 0) row_loss[a.offset + i] += sum;
}

__global__ void margin_grad_kernel(float* __restrict__ tile, TileSide a, TileSide b, float margin,
                                   const float* __restrict__ weight, bool weight_on_rows, float* r) {
  const int64_t i = blockIdx.x, nb = b.count;
  const float sa = inv_of(a.inv_norm, a.offset + i);
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < nb; j += kThreads) {
    const float sb = inv_of(b.inv_norm, b.offset + j);
    const float s = tile[i * nb + j] * sa * sb;
    const float w = weight_on_rows ? weight[a.offset + i] : weight[b.offset + j];
    const float ds = is_positive(a, b, i, j) ? -w : (s > margin ? w : 0.f);
    sum += ds * s;
    tile[i * nb + j] = ds * sb;
  }
  sum = block_reduce(sum, Sum());
  if (threadIdx.x == 0) r[a.offset + i] += sum;
}

__global__ void negatives_kernel(const float* __restrict__ tile, TileSide a, TileSide b, const float* inv_tau,
                                 uint64_t seed, uint64_t stream, float* best, int64_t* best_index) {
  const int64_t i = blockIdx.x, nb = b.count, row = a.offset + i;
  const float scale = *inv_tau;
  const uint64_t key = row_key(seed, stream, row);
  float value = -INFINITY;
  int64_t index = -1;
  for (int64_t j = threadIdx.x; j < nb; j += kThreads) {
    if (is_positive(a, b, i, j)) continue;
    const float u = counter_uniform(key, b.offset + j);
    const float score = tile[i * nb + j] * scale - logf(-logf(u));
    if (argmax_better(value, index, score, b.offset + j)) value = score, index = b.offset + j;
  }
  block_argmax(value, index);
  if (threadIdx.x == 0 && index >= 0 && value > best[row]) {  // strict: an earlier tile's equal value wins
    best[row] = value;
    best_index[row] = index;
  }
}

}  // namespace

void launch_margin_rows(const float* tile, TileSide a, TileSide b, float margin, float* row_loss) {
  margin_rows_kernel<<<a.count, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(tile, a, b, margin, row_loss);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_margin_grad(float* tile, TileSide a, TileSide b, float margin, const float* weight, bool weight_on_rows,
                        float* r) {
  margin_grad_kernel<<<a.count, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(tile, a, b, margin, weight,
                                                                                  weight_on_rows, r);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_negatives(const float* tile, TileSide a, TileSide b, const float* inv_tau, uint64_t seed,
                      uint64_t stream, float* best, int64_t* best_index) {
  negatives_kernel<<<a.count, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(tile, a, b, inv_tau, seed, stream,
                                                                                best, best_index);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastadapter::gpu
