// The ITM ops' CUDA tile kernels (tiles.cu), launched by backend.cpp on a tile buffer holding the raw float32
// GEMM <a_i, b_j> of A's rows [a.offset, a.offset + na) against B's rows [b.offset, b.offset + nb), row-major.
// A block per tile row; tiles run in stream order, so the per-row accumulators need no atomics.
#pragma once

#include <cstdint>

#include "../../contrastive/cuda/tiles.cuh"

namespace fastadapter::gpu {

// row_loss[a.offset + i] += sum_j y (1 - s) + (1 - y) max(0, s - margin), s scaled by the inverse norms.
void launch_margin_rows(const float* tile, TileSide a, TileSide b, float margin, float* row_loss);

// Overwrites the tile with dS / |b_j|, dS = w (-y + (1 - y) [s > margin]), w = weight[a.offset + i] (on rows) or
// weight[b.offset + j]; adds sum_j dS s to r[a.offset + i].
void launch_margin_grad(float* tile, TileSide a, TileSide b, float margin, const float* weight, bool weight_on_rows,
                        float* r);

// The running argmax per row of s * inv_tau + Gumbel noise (seed, stream, row, column) over the non-positive
// columns: best and best_index of A's rows, updated tile by tile (start at -inf and -1).
void launch_negatives(const float* tile, TileSide a, TileSide b, const float* inv_tau, uint64_t seed,
                      uint64_t stream, float* best, int64_t* best_index);

}  // namespace fastadapter::gpu
