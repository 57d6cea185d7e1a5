// The contrastive forward on CPU: each task takes a block of A's rows and walks B in tiles, one GEMM per tile,
// keeping the rows' statistics in registers-to-L1 and the columns' in a per-thread partial (O(n_b) floats), merged
// at the end with the log-sum-exp rule. Both directions from one pass over the logits.
#include <ATen/Parallel.h>

#include <vector>

#include "tiles.h"

namespace fastadapter::cpu {
namespace {

// Running statistics of one direction over n rows or columns.
struct Running {
  std::vector<float> max, sum, hard, count, soft_max, soft_sum, soft_acc;
  Running(int64_t n, bool soft)
      : max(n, kNegInf), sum(n, 0.f), hard(n, 0.f), count(n, 0.f), soft_max(soft ? n : 0, kNegInf),
        soft_sum(soft ? n : 0, 0.f), soft_acc(soft ? n : 0, 0.f) {}
};

void finish(const Running& r, int64_t i, int64_t out, float alpha, float* loss, Stats stats) {
  const bool soft = !r.soft_sum.empty();
  const float lse = r.max[i] + std::log(r.sum[i]);
  float value = lse - (1.f - alpha) * r.hard[i] / r.count[i];
  if (soft) value -= alpha * r.soft_acc[i] / r.soft_sum[i];
  loss[out] = value;
  stats.lse[out] = lse;
  stats.soft_lse[out] = soft ? r.soft_max[i] + std::log(r.soft_sum[i]) : 0.f;
  stats.count[out] = r.count[i];
}

// (max, sum[, acc]) of `from` merged into `into` at j; a column a thread never saw has max = -inf.
void merge_lse(float& max, float& sum, float* acc, float from_max, float from_sum, float from_acc) {
  if (from_max == kNegInf) return;
  const float new_max = std::max(max, from_max);
  const float mine = max == kNegInf ? 0.f : std::exp(max - new_max), theirs = std::exp(from_max - new_max);
  sum = sum * mine + from_sum * theirs;
  if (acc) *acc = *acc * mine + from_acc * theirs;
  max = new_max;
}

void merge(Running& into, const Running& from) {
  const bool soft = !into.soft_sum.empty();
  for (size_t j = 0; j < into.max.size(); ++j) {
    merge_lse(into.max[j], into.sum[j], nullptr, from.max[j], from.sum[j], 0.f);
    into.hard[j] += from.hard[j];
    into.count[j] += from.count[j];
    if (soft) {
      merge_lse(into.soft_max[j], into.soft_sum[j], &into.soft_acc[j], from.soft_max[j], from.soft_sum[j],
                from.soft_acc[j]);
    }
  }
}

}  // namespace

void contrastive_forward_tiles(const Side& a, const Side& b, float inv_tau, float alpha, bool columns,
                               float* row_loss, Stats row_stats, float* column_loss, Stats column_stats) {
  const bool soft = a.soft != nullptr;
  const int64_t blocks = (a.n + kRows - 1) / kRows;
  std::vector<Running> partial;
  if (columns) {
    for (int t = 0; t < at::get_num_threads(); ++t) partial.emplace_back(b.n, soft);
  }
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(kRows * kCols), m(soft ? kRows * kCols : 0), scratch(kCols);
    Running* cols = columns ? &partial[at::get_thread_num()] : nullptr;
    for (int64_t block = begin; block < end; ++block) {
      const int64_t a0 = block * kRows, na = std::min(kRows, a.n - a0);
      Running rows(na, soft);
      for (int64_t b0 = 0; b0 < b.n; b0 += kCols) {
        const int64_t nb = std::min(kCols, b.n - b0);
        logits_tile(a.x, a.inv_norm, b.x, b.inv_norm, a0, na, b0, nb, a.d, inv_tau, s.data());
        if (soft) {
          logits_tile(a.soft, a.soft_inv_norm, b.soft, b.soft_inv_norm, a0, na, b0, nb, a.soft_d, inv_tau, m.data());
        }
        for (int64_t i = 0; i < na; ++i) {
          online_row(s.data() + i * nb, nullptr, nb, rows.max[i], rows.sum[i], nullptr);
          if (soft) {
            online_row(m.data() + i * nb, s.data() + i * nb, nb, rows.soft_max[i], rows.soft_sum[i],
                       &rows.soft_acc[i]);
          }
        }
        for_each_positive(a, b, a0, na, b0, nb, [&](int64_t i, int64_t j) {
          const float value = s[i * nb + j];
          rows.hard[i] += value;
          rows.count[i] += 1.f;
          if (cols) {
            cols->hard[b0 + j] += value;
            cols->count[b0 + j] += 1.f;
          }
        });
        if (cols) {
          online_columns(s.data(), nullptr, na, nb, cols->max.data() + b0, cols->sum.data() + b0, nullptr,
                         scratch.data());
          if (soft) {
            online_columns(m.data(), s.data(), na, nb, cols->soft_max.data() + b0, cols->soft_sum.data() + b0,
                           cols->soft_acc.data() + b0, scratch.data());
          }
        }
      }
      for (int64_t i = 0; i < na; ++i) finish(rows, i, a0 + i, alpha, row_loss, row_stats);
    }
  });
  if (!columns) return;
  for (size_t t = 1; t < partial.size(); ++t) merge(partial[0], partial[t]);
  for (int64_t j = 0; j < b.n; ++j) finish(partial[0], j, j, alpha, column_loss, column_stats);
}

}  // namespace fastadapter::cpu
