// The hard-negative sampler on CPU: per block of A's rows, tiles of s (tiles.h), then for each row the running
// argmax of s * inv_tau + g over the tile's non-positive columns, g = -log(-log u) Gumbel noise with u a pure
// function of (seed, stream, row, column) (common/counter_noise.h). O(n) state: a best value and index per row.
#include <ATen/Parallel.h>

#include <limits>
#include <vector>

#include "../../common/counter_noise.h"
#include "../../contrastive/cpu/tiles.h"
#include "kernels.h"

namespace fastadapter::cpu {

void negatives_rows(const Side& a, const Side& b, float inv_tau, uint64_t seed, uint64_t stream, int64_t* index) {
  const int64_t blocks = (a.n + kRows - 1) / kRows;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(kRows * kCols), noise(kCols);
    for (int64_t block = begin; block < end; ++block) {
      const int64_t a0 = block * kRows, na = std::min(kRows, a.n - a0);
      std::vector<float> best(na, kNegInf);
      std::vector<int64_t> best_index(na, -1);
      for (int64_t b0 = 0; b0 < b.n; b0 += kCols) {
        const int64_t nb = std::min(kCols, b.n - b0);
        logits_tile(a.x, nullptr, b.x, nullptr, a0, na, b0, nb, a.d, inv_tau, s.data());
        for_each_positive(a, b, a0, na, b0, nb, [&](int64_t i, int64_t j) { s[i * nb + j] = kNegInf; });
        for (int64_t i = 0; i < na; ++i) {
          const uint64_t key = row_key(seed, stream, a0 + i);
          for (int64_t j = 0; j < nb; ++j) noise[j] = counter_uniform(key, b0 + j);
          const float* row = s.data() + i * nb;
          int64_t j = 0;
          for (; j + kLanes <= nb; j += kLanes) {
            const Vec g = Vec(0.f) - (Vec(0.f) - Vec::loadu(noise.data() + j).log()).log();
            (Vec::loadu(row + j) + g).store(noise.data() + j);
          }
          for (; j < nb; ++j) noise[j] = row[j] - std::log(-std::log(noise[j]));
          for (j = 0; j < nb; ++j) {  // strict >: the lowest index wins a tie; a positive (-inf) never does
            if (noise[j] > best[i]) {
              best[i] = noise[j];
              best_index[i] = b0 + j;
            }
          }
        }
      }
      for (int64_t i = 0; i < na; ++i) index[a0 + i] = best_index[i];
    }
  });
}

}  // namespace fastadapter::cpu
