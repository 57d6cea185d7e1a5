// The contrastive op's CPU kernels over float32 sides (tiles.h), parallel over blocks of A's rows.
#pragma once

#include <cstdint>

namespace fastadapter::cpu {

// One side of the logits: float32 features (n, d) and 1/|row| (nullptr without normalisation), ids (nullptr: the
// diagonal is positive) and the soft features (nullptr without soft targets).
struct Side {
  const float* x = nullptr;
  const float* inv_norm = nullptr;
  const int64_t* ids = nullptr;
  const float* soft = nullptr;
  const float* soft_inv_norm = nullptr;
  int64_t n = 0, d = 0, soft_d = 0;
};

// Per-row (or per-column) statistics of one direction, float32 (3, n) as the contract has them.
struct Stats {
  float* lse;
  float* soft_lse;
  float* count;
};

inline Stats stats_of(float* data, int64_t n) { return {data, data + n, data + 2 * n}; }

// One direction's incoming loss grads (nullptr: the direction is not differentiated) and forward statistics.
struct Direction {
  const float* grad = nullptr;
  Stats stats{nullptr, nullptr, nullptr};
};

// Rows of a against b: each row's loss and statistics; with columns, also each column's (per-thread partial
// column statistics, merged at the end). alpha > 0 needs both sides' soft features.
void contrastive_forward_tiles(const Side& a, const Side& b, float inv_tau, float alpha, bool columns,
                               float* row_loss, Stats row_stats, float* column_loss, Stats column_stats);

// The gradient sweep over a's rows: grad_a (n_a x d, float32; nullptr to skip) and, when grad_b is given, b's
// gradient too from per-thread partials (grad_b must start zeroed). Returns sum_ab dS_ab S_ab, which gives the
// temperature's grad. rows is the direction whose losses are per row of a, columns the other.
double contrastive_backward_tiles(const Side& a, const Side& b, const Direction& rows, const Direction& columns,
                                  float inv_tau, float alpha, float* grad_a, float* grad_b);

}  // namespace fastadapter::cpu
