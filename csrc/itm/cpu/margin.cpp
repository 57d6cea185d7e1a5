// The ITM margin loss on CPU: per block of A's rows, tiles of s = <a_hat, b_hat> (tiles.h), their hinge terms
// summed per row; backward recomputes each tile, turns it into dS (the hinge's slope, -1 at the positives) and
// accumulates U += dS · B_hat (a second GEMM), then grad = (U - R a_hat) / |a| with R = sum_j dS S.
#include <ATen/Parallel.h>

#include <vector>

#include "../../contrastive/cpu/tiles.h"
#include "kernels.h"

namespace fastadapter::cpu {

void margin_rows(const Side& a, const Side& b, float margin, float* row_loss) {
  const int64_t blocks = (a.n + kRows - 1) / kRows;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(kRows * kCols);
    for (int64_t block = begin; block < end; ++block) {
      const int64_t a0 = block * kRows, na = std::min(kRows, a.n - a0);
      std::vector<float> loss(na, 0.f);
      for (int64_t b0 = 0; b0 < b.n; b0 += kCols) {
        const int64_t nb = std::min(kCols, b.n - b0);
        logits_tile(a.x, a.inv_norm, b.x, b.inv_norm, a0, na, b0, nb, a.d, 1.f, s.data());
        for (int64_t i = 0; i < na; ++i) {  // every pair as a negative, then the positives corrected
          const float* row = s.data() + i * nb;
          Vec sum(0.f);
          for (int64_t j = 0; j < nb; j += kLanes) {
            const int64_t count = std::min(kLanes, nb - j);
            // Lanes past the tile load as 0, whose hinge is 0 (margin >= 0).
            sum = sum + at::vec::maximum(Vec::loadu(row + j, count) - Vec(margin), Vec(0.f));
          }
          loss[i] += horizontal_sum(sum);
        }
        for_each_positive(a, b, a0, na, b0, nb, [&](int64_t i, int64_t j) {
          const float value = s[i * nb + j];
          loss[i] += (1.f - value) - std::max(value - margin, 0.f);
        });
      }
      for (int64_t i = 0; i < na; ++i) row_loss[a0 + i] = loss[i];
    }
  });
}

void margin_grad(const Side& a, const Side& b, float margin, const float* row_weight, const float* column_weight,
                 float* grad_a) {
  const int64_t d = a.d, blocks = (a.n + kRows - 1) / kRows;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(kRows * kCols), ds(kRows * kCols), u(kRows * d), r(kRows);
    for (int64_t block = begin; block < end; ++block) {
      const int64_t a0 = block * kRows, na = std::min(kRows, a.n - a0);
      std::fill(u.begin(), u.end(), 0.f);
      std::fill(r.begin(), r.end(), 0.f);
      for (int64_t b0 = 0; b0 < b.n; b0 += kCols) {
        const int64_t nb = std::min(kCols, b.n - b0);
        logits_tile(a.x, a.inv_norm, b.x, b.inv_norm, a0, na, b0, nb, d, 1.f, s.data());
        const auto weight = [&](int64_t i, int64_t j) {
          return (row_weight ? row_weight[a0 + i] : 0.f) + (column_weight ? column_weight[b0 + j] : 0.f);
        };
        for (int64_t i = 0; i < na; ++i) {
          for (int64_t j = 0; j < nb; ++j) ds[i * nb + j] = s[i * nb + j] > margin ? weight(i, j) : 0.f;
        }
        for_each_positive(a, b, a0, na, b0, nb, [&](int64_t i, int64_t j) { ds[i * nb + j] = -weight(i, j); });
        for (int64_t i = 0; i < na; ++i) {  // r_i = sum_j dS S; dS / |b_j| for the GEMM
          float sum = 0.f;
          for (int64_t j = 0; j < nb; ++j) {
            sum += ds[i * nb + j] * s[i * nb + j];
            if (b.inv_norm) ds[i * nb + j] *= b.inv_norm[b0 + j];
          }
          r[i] += sum;
        }
        matrix(u.data(), na, d).addmm_(matrix(ds.data(), na, nb), matrix(b.x + b0 * d, nb, d));
      }
      finish_rows(a, a0, na, u.data(), r.data(), 1.f, grad_a);
    }
  });
}

}  // namespace fastadapter::cpu
