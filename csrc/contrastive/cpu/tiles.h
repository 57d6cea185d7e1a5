// The CPU kernels' tiles (forward.cpp, backward.cpp): one side A's block of rows against a tile of the other side
// B's rows. A tile of logits S = <a, b> * |a|^-1 |b|^-1 / tau comes from one GEMM on the raw float32 features,
// scaled after, so no normalised copy of either side is ever made; its statistics are updated online. The GEMMs
// are ATen's (MKL) on views of the buffers: this torch exports no raw CPU BLAS entry point, and at these tile
// sizes a call's few microseconds of overhead are about 2% of its work.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "../../common/cpu/vec_math.h"
#include "kernels.h"

namespace fastadapter::cpu {
namespace {

// Rows of A per task and rows of B per tile: A's block (kRows x d), B's tile (kCols x d) and the float32 tiles
// (kRows x kCols) stay in a core's L2 for d up to a few hundred.
constexpr int64_t kRows = 128;
constexpr int64_t kCols = 512;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// A row-major float32 buffer as a (rows, cols) tensor, for ATen's GEMMs.
inline at::Tensor matrix(const float* p, int64_t rows, int64_t cols) {
  return at::from_blob(const_cast<float*>(p), {rows, cols}, at::TensorOptions().dtype(at::kFloat));
}

// tile (na x nb, row-major) = a[a0:a0+na] · b[b0:b0+nb]ᵀ scaled by inv_tau / (|a_i| |b_j|).
inline void logits_tile(const float* a, const float* a_inv, const float* b, const float* b_inv, int64_t a0,
                        int64_t na, int64_t b0, int64_t nb, int64_t d, float inv_tau, float* tile) {
  at::Tensor out = matrix(tile, na, nb);
  at::mm_out(out, matrix(a + a0 * d, na, d), matrix(b + b0 * d, nb, d).t());
  for (int64_t i = 0; i < na; ++i) {
    float* row = tile + i * nb;
    const float scale = inv_tau * (a_inv ? a_inv[a0 + i] : 1.f);
    int64_t j = 0;
    for (; j + kLanes <= nb; j += kLanes) {
      const Vec column_scale = b_inv ? Vec::loadu(b_inv + b0 + j) : Vec(1.f);
      (Vec::loadu(row + j) * column_scale * Vec(scale)).store(row + j);
    }
    for (; j < nb; ++j) row[j] *= scale * (b_inv ? b_inv[b0 + j] : 1.f);
  }
}

inline float max_of(const float* p, int64_t n) {
  Vec best(kNegInf);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) best = at::vec::maximum(best, Vec::loadu(p + j));
  float lanes[kLanes];
  best.store(lanes);
  float out = *std::max_element(lanes, lanes + kLanes);
  for (; j < n; ++j) out = std::max(out, p[j]);
  return out;
}

// One row's online log-sum-exp step over a tile row: (max, sum) rescaled to the new max; with weights, also
// acc = sum exp(logits - max) * weights under the same rescaling (the soft targets' weighted sum of S).
inline void online_row(const float* logits, const float* weights, int64_t n, float& max, float& sum, float* acc) {
  const float new_max = std::max(max, max_of(logits, n));
  const float scale = std::exp(max - new_max);  // 0 on the first tile (max = -inf)
  Vec s(0.f), a(0.f);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const Vec e = fast_exp(Vec::loadu(logits + j) - Vec(new_max));
    s = s + e;
    if (acc) a = a + e * Vec::loadu(weights + j);
  }
  float tail_s = 0.f, tail_a = 0.f;
  for (; j < n; ++j) {
    const float e = std::exp(logits[j] - new_max);
    tail_s += e;
    if (acc) tail_a += e * weights[j];
  }
  sum = sum * scale + horizontal_sum(s) + tail_s;
  if (acc) *acc = *acc * scale + horizontal_sum(a) + tail_a;
  max = new_max;
}

// The same step for every column of a tile (na x nb): the running (max, sum[, acc]) of nb columns, vectorised
// across the columns. scratch holds nb floats.
inline void online_columns(const float* tile, const float* weights, int64_t na, int64_t nb, float* max, float* sum,
                           float* acc, float* scratch) {
  std::fill(scratch, scratch + nb, kNegInf);
  for (int64_t i = 0; i < na; ++i) {
    const float* row = tile + i * nb;
    int64_t j = 0;
    for (; j + kLanes <= nb; j += kLanes) {
      at::vec::maximum(Vec::loadu(scratch + j), Vec::loadu(row + j)).store(scratch + j);
    }
    for (; j < nb; ++j) scratch[j] = std::max(scratch[j], row[j]);
  }
  for (int64_t j = 0; j < nb; ++j) {
    const float new_max = std::max(max[j], scratch[j]);
    const float scale = std::exp(max[j] - new_max);
    sum[j] *= scale;
    if (acc) acc[j] *= scale;
    max[j] = new_max;
  }
  for (int64_t i = 0; i < na; ++i) {
    const float* row = tile + i * nb;
    const float* w = weights ? weights + i * nb : nullptr;
    int64_t j = 0;
    for (; j + kLanes <= nb; j += kLanes) {
      const Vec e = fast_exp(Vec::loadu(row + j) - Vec::loadu(max + j));
      (Vec::loadu(sum + j) + e).store(sum + j);
      if (acc) (Vec::loadu(acc + j) + e * Vec::loadu(w + j)).store(acc + j);
    }
    for (; j < nb; ++j) {
      const float e = std::exp(row[j] - max[j]);
      sum[j] += e;
      if (acc) acc[j] += e * w[j];
    }
  }
}

// grad x_i = (u_i / tau - r_i x_hat_i) / |x_i| with normalisation, u_i / tau without; u is float32 (n, d).
inline void finish_rows(const Side& x, int64_t x0, int64_t n, const float* u, const float* r, float inv_tau,
                        float* grad) {
  for (int64_t i = 0; i < n; ++i) {
    const float inv = x.inv_norm ? x.inv_norm[x0 + i] : 1.f;
    const float radial = x.inv_norm ? r[i] * inv * inv : 0.f;
    const float* xi = x.x + (x0 + i) * x.d;
    for (int64_t k = 0; k < x.d; ++k) grad[(x0 + i) * x.d + k] = inv_tau * inv * u[i * x.d + k] - radial * xi[k];
  }
}

// Calls visit(i, j) for every positive pair of the tile: equal ids, or the diagonal.
template <typename F>
inline void for_each_positive(const Side& a, const Side& b, int64_t a0, int64_t na, int64_t b0, int64_t nb,
                              F&& visit) {
  if (a.ids == nullptr) {
    for (int64_t i = std::max(a0, b0); i < std::min(a0 + na, b0 + nb); ++i) visit(i - a0, i - b0);
    return;
  }
  for (int64_t i = 0; i < na; ++i) {
    const int64_t id = a.ids[a0 + i];
    for (int64_t j = 0; j < nb; ++j) {
      if (b.ids[b0 + j] == id) visit(i, j);
    }
  }
}

}  // namespace
}  // namespace fastadapter::cpu
