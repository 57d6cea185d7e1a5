// The ITM ops' CPU kernels over float32 sides, each a parallel sweep over blocks of A's rows walking B in tiles
// (one GEMM per tile: the contrastive op's tiles, csrc/contrastive/cpu/tiles.h). Columns are the rows of the
// swapped problem, so each direction is one sweep and needs no per-thread partials.
#pragma once

#include <cstdint>

#include "../../contrastive/cpu/kernels.h"

namespace fastadapter::cpu {

// loss_i = sum_j y_ij (1 - s_ij) + (1 - y_ij) max(0, s_ij - margin) for a's rows.
void margin_rows(const Side& a, const Side& b, float margin, float* row_loss);

// grad_a (n_a x d, float32) of sum_ij w_ij l_ij, w_ij = row_weight_i + column_weight_j (either may be nullptr).
void margin_grad(const Side& a, const Side& b, float margin, const float* row_weight, const float* column_weight,
                 float* grad_a);

// For each row of a, argmax over the non-positive columns j of s_ij * inv_tau + Gumbel noise (seed, stream, i, j);
// -1 where the row has no negative.
void negatives_rows(const Side& a, const Side& b, float inv_tau, uint64_t seed, uint64_t stream, int64_t* index);

}  // namespace fastadapter::cpu
