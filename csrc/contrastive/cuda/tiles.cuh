// The contrastive op's CUDA tile kernels (tiles.cu), launched by backend.cpp on its tile buffers: a tile holds
// the raw float32 GEMM <a_i, b_j> of A's rows [a0, a0 + na) against B's rows [b0, b0 + nb), row-major, and the
// kernels scale it to logits on the fly (inv_tau / (|a_i| |b_j|), inv_tau read from the device).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fastadapter::gpu {

// One side of the logits as the kernels read it: inverse norms (nullptr without normalisation), ids (nullptr:
// the diagonal is positive), offset of the tile's first row in the side.
struct TileSide {
  const float* inv_norm;
  const float* soft_inv_norm;
  const int64_t* ids;
  int64_t offset, count;
};

// Running statistics of one direction, float32 arrays of the side's length, updated tile by tile.
struct Running {
  float *max, *sum, *hard, *count, *soft_max, *soft_sum, *soft_acc;  // soft_* nullptr without soft targets
};

// Forward: the tile's rows' statistics (a block per row) and its columns' (a thread per column).
void launch_row_stats(const float* s, const float* m, TileSide a, TileSide b, const float* inv_tau, Running rows);
void launch_column_stats(const float* s, const float* m, TileSide a, TileSide b, const float* inv_tau,
                         Running columns);
// loss and stats (3, n) from the running statistics.
void launch_finish_stats(Running r, int64_t n, float alpha, float* loss, float* stats);

// Backward: one direction's grads and statistics (grad nullptr: not differentiated).
struct GradDirection {
  const float* grad;
  const float* stats;  // (3, n): lse, soft_lse, count
  int64_t n;
};
// dS over the tile from both directions; writes g = dS / |b_j| and (when h) h = dS / |a_i| in the GEMM dtype,
// adds sum_j dS S to r[a0 + i], and, when products, overwrites s with dS * S for column_sums.
void launch_grad_tile(float* s, const float* m, TileSide a, TileSide b, const float* inv_tau, GradDirection rows,
                      GradDirection columns, float alpha, at::Tensor& g, at::Tensor* h, float* r, bool products);
void launch_column_sums(const float* s, int64_t na, int64_t nb, float* c);
// grad x = inv_tau |x|^-1 u - |x|^-2 r x (normalised) or inv_tau u, into grad in x's dtype.
void launch_finish_grad(const at::Tensor& u, const float* r, const float* inv_norm, const float* inv_tau,
                        const at::Tensor& x, at::Tensor& grad);

}  // namespace fastadapter::gpu
