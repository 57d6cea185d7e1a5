// The contrastive backward on CPU: each task takes a block of A's rows and walks B in tiles, recomputing the
// logits (one GEMM), forming dS from the saved statistics, then U += (dS / |b|) · B (a second GEMM) for A's grad
// and, fused, V += (dS / |a|)ᵀ · A (a third) into a per-thread partial of B's grad. The caller falls back to a
// second sweep with the sides swapped when those partials would cost too much memory (backend.cpp).
#include <ATen/Parallel.h>

#include <vector>

#include "tiles.h"

namespace fastadapter::cpu {
namespace {

struct TileBuffers {
  std::vector<float> s, m, ds, h;
  TileBuffers(bool soft, bool other)
      : s(kRows * kCols), m(soft ? kRows * kCols : 0), ds(kRows * kCols), h(other ? kRows * kCols : 0) {}
};

// ds = g_a (exp(S - lse_a) - alpha exp(M - soft_lse_a)) + g_b (the same per column), then the hard targets'
// -(1 - alpha) g / count at the positives: both directions' d loss / d S over the tile.
void grad_logits(const Side& a, const Side& b, const Direction& rows, const Direction& columns, float alpha,
                 int64_t a0, int64_t na, int64_t b0, int64_t nb, TileBuffers& t) {
  const bool soft = a.soft != nullptr;
  for (int64_t i = 0; i < na; ++i) {
    const float* s = t.s.data() + i * nb;
    const float* m = soft ? t.m.data() + i * nb : nullptr;
    float* ds = t.ds.data() + i * nb;
    const float ga = rows.grad ? rows.grad[a0 + i] : 0.f;
    const float lse_a = rows.grad ? rows.stats.lse[a0 + i] : 0.f;
    const float soft_a = rows.grad ? rows.stats.soft_lse[a0 + i] : 0.f;
    int64_t j = 0;
    for (; j < nb; j += kLanes) {
      const int64_t count = std::min(kLanes, nb - j);
      const Vec sv = Vec::loadu(s + j, count);
      Vec acc(0.f);
      if (rows.grad) {
        Vec p = fast_exp(sv - Vec(lse_a));
        if (soft) p = p - Vec(alpha) * fast_exp(Vec::loadu(m + j, count) - Vec(soft_a));
        acc = acc + Vec(ga) * p;
      }
      if (columns.grad) {
        Vec p = fast_exp(sv - Vec::loadu(columns.stats.lse + b0 + j, count));
        if (soft) {
          p = p - Vec(alpha) * fast_exp(Vec::loadu(m + j, count) - Vec::loadu(columns.stats.soft_lse + b0 + j, count));
        }
        acc = acc + Vec::loadu(columns.grad + b0 + j, count) * p;
      }
      acc.store(ds + j, count);
    }
  }
  for_each_positive(a, b, a0, na, b0, nb, [&](int64_t i, int64_t j) {
    float hard = 0.f;
    if (rows.grad) hard += rows.grad[a0 + i] / rows.stats.count[a0 + i];
    if (columns.grad) hard += columns.grad[b0 + j] / columns.stats.count[b0 + j];
    t.ds[i * nb + j] -= (1.f - alpha) * hard;
  });
}

// r_i += sum_j dS_ij S_ij (and c_j += the same over i); h = dS / |a_i| for B's GEMM, ds becomes dS / |b_j|.
void row_sums_and_scale(const Side& a, const Side& b, int64_t a0, int64_t na, int64_t b0, int64_t nb,
                        TileBuffers& t, float* r, float* c) {
  for (int64_t i = 0; i < na; ++i) {
    const float* s = t.s.data() + i * nb;
    float* ds = t.ds.data() + i * nb;
    float* h = t.h.empty() ? nullptr : t.h.data() + i * nb;
    const float a_inv = a.inv_norm ? a.inv_norm[a0 + i] : 1.f;
    Vec sum(0.f);
    for (int64_t j = 0; j < nb; j += kLanes) {
      const int64_t count = std::min(kLanes, nb - j);
      const Vec g = Vec::loadu(ds + j, count);
      const Vec product = g * Vec::loadu(s + j, count);  // zero past the tile's end: loads pad with zeros
      sum = sum + product;
      if (c) (Vec::loadu(c + b0 + j, count) + product).store(c + b0 + j, count);
      if (h) (g * Vec(a_inv)).store(h + j, count);
      if (b.inv_norm) (g * Vec::loadu(b.inv_norm + b0 + j, count)).store(ds + j, count);
    }
    r[i] += horizontal_sum(sum);
  }
}

}  // namespace

double contrastive_backward_tiles(const Side& a, const Side& b, const Direction& rows, const Direction& columns,
                                  float inv_tau, float alpha, float* grad_a, float* grad_b) {
  const int64_t d = a.d, blocks = (a.n + kRows - 1) / kRows;
  const int threads = at::get_num_threads();
  // Thread 0 accumulates B's grad in grad_b itself; the others in partials added at the end.
  std::vector<std::vector<float>> v_partial(grad_b ? threads - 1 : 0, std::vector<float>(b.n * d, 0.f));
  std::vector<std::vector<float>> c_partial(grad_b ? threads : 0, std::vector<float>(b.n, 0.f));
  std::vector<double> r_total(threads, 0.0);
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    const int tid = at::get_thread_num();
    TileBuffers t(a.soft != nullptr, grad_b != nullptr);
    std::vector<float> u(kRows * d), r(kRows);
    float* v = grad_b ? (tid == 0 ? grad_b : v_partial[tid - 1].data()) : nullptr;
    float* c = grad_b ? c_partial[tid].data() : nullptr;
    for (int64_t block = begin; block < end; ++block) {
      const int64_t a0 = block * kRows, na = std::min(kRows, a.n - a0);
      std::fill(u.begin(), u.end(), 0.f);
      std::fill(r.begin(), r.end(), 0.f);
      for (int64_t b0 = 0; b0 < b.n; b0 += kCols) {
        const int64_t nb = std::min(kCols, b.n - b0);
        logits_tile(a.x, a.inv_norm, b.x, b.inv_norm, a0, na, b0, nb, d, inv_tau, t.s.data());
        if (a.soft) {
          logits_tile(a.soft, a.soft_inv_norm, b.soft, b.soft_inv_norm, a0, na, b0, nb, a.soft_d, inv_tau,
                      t.m.data());
        }
        grad_logits(a, b, rows, columns, alpha, a0, na, b0, nb, t);
        row_sums_and_scale(a, b, a0, na, b0, nb, t, r.data(), c);
        // u += (dS / |b|) · b_tile; v_tile += (dS / |a|)ᵀ · a_block.
        if (grad_a) matrix(u.data(), na, d).addmm_(matrix(t.ds.data(), na, nb), matrix(b.x + b0 * d, nb, d));
        if (v) matrix(v + b0 * d, nb, d).addmm_(matrix(t.h.data(), na, nb).t(), matrix(a.x + a0 * d, na, d));
      }
      if (grad_a) finish_rows(a, a0, na, u.data(), r.data(), inv_tau, grad_a);
      for (int64_t i = 0; i < na; ++i) r_total[tid] += r[i];
    }
  });
  if (grad_b) {
    for (const auto& partial : v_partial) {
      for (int64_t k = 0; k < b.n * d; ++k) grad_b[k] += partial[k];
    }
    for (int t = 1; t < threads; ++t) {
      for (int64_t j = 0; j < b.n; ++j) c_partial[0][j] += c_partial[t][j];
    }
    // In place: finish_rows reads u (= grad_b) row by row before writing that row.
    finish_rows(b, 0, b.n, grad_b, c_partial[0].data(), inv_tau, grad_b);
  }
  double total = 0.0;
  for (double value : r_total) total += value;
  return total;
}

}  // namespace fastadapter::cpu
