// The ITM ops' cuda backend: tiles of up to kTile x kTile similarities, each a cuBLAS GEMM (ATen) on float32
// features followed by the tile kernels of tiles.cu. The margin's backward turns each recomputed tile into dS and
// accumulates U += dS · B with one more GEMM (a float32 N x d accumulator). Memory: one tile buffer, never N x N.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <cmath>

#include "../itm.h"
#include "tiles.cuh"

namespace fastadapter {
namespace {

constexpr int64_t kTile = 4096;  // 64 MiB of float32 similarities per tile buffer

struct CudaSide {
  Tensor x, inv, ids;
  int64_t n = 0;
  gpu::TileSide at(int64_t offset, int64_t count) const {
    return {inv.defined() ? inv.data_ptr<float>() : nullptr, nullptr,
            ids.defined() ? ids.data_ptr<int64_t>() : nullptr, offset, count};
  }
};

CudaSide prepare(const Tensor& features, const OptTensor& ids, bool normalize) {
  CudaSide s;
  s.x = features.to(at::kFloat).contiguous();
  s.n = s.x.size(0);
  if (normalize) s.inv = at::linalg_vector_norm(s.x, 2, {1}).clamp_min(1e-12).reciprocal();
  if (ids) s.ids = ids->to(at::kLong).contiguous();
  return s;
}

// Calls visit(tile, a0, na, b0, nb) for every tile of a's rows against b's, the tile holding <a_i, b_j>.
template <typename F>
void for_each_tile(const CudaSide& a, const CudaSide& b, F&& visit) {
  Tensor buffer = at::empty({std::min(kTile, a.n) * std::min(kTile, b.n)}, a.x.options());
  for (int64_t a0 = 0; a0 < a.n; a0 += kTile) {
    const int64_t na = std::min(kTile, a.n - a0);
    for (int64_t b0 = 0; b0 < b.n; b0 += kTile) {
      const int64_t nb = std::min(kTile, b.n - b0);
      Tensor tile = buffer.narrow(0, 0, na * nb).view({na, nb});
      at::mm_out(tile, a.x.narrow(0, a0, na), b.x.narrow(0, b0, nb).t());
      visit(tile, a0, na, b0, nb);
    }
  }
}

Tensor margin_forward_cuda(const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                           const OptTensor& text_ids, double margin, bool normalize) {
  const c10::cuda::CUDAGuard guard(image.device());
  const CudaSide a = prepare(image, image_ids, normalize), b = prepare(text, text_ids, normalize);
  Tensor row_loss = at::zeros({a.n}, a.x.options());
  for_each_tile(a, b, [&](Tensor& tile, int64_t a0, int64_t na, int64_t b0, int64_t nb) {
    gpu::launch_margin_rows(tile.data_ptr<float>(), a.at(a0, na), b.at(b0, nb), static_cast<float>(margin),
                            row_loss.data_ptr<float>());
  });
  return row_loss;
}

// a's grad of sum_ij w l_ij: U and R over the tiles, then (U - R a_hat) / |a| (or U without normalisation).
Tensor side_grad(const CudaSide& a, const CudaSide& b, double margin, const Tensor& w, bool weight_on_rows) {
  Tensor u = at::zeros_like(a.x), r = at::zeros({a.n}, a.x.options());
  for_each_tile(a, b, [&](Tensor& tile, int64_t a0, int64_t na, int64_t b0, int64_t nb) {
    gpu::launch_margin_grad(tile.data_ptr<float>(), a.at(a0, na), b.at(b0, nb), static_cast<float>(margin),
                            w.data_ptr<float>(), weight_on_rows, r.data_ptr<float>());
    u.narrow(0, a0, na).addmm_(tile, b.x.narrow(0, b0, nb));
  });
  if (!a.inv.defined()) return u;
  const Tensor inv = a.inv.unsqueeze(1);
  return inv * u - (r.unsqueeze(1) * inv * inv) * a.x;
}

MarginBackwardResult margin_backward_cuda(const Tensor& grad_row_loss, const Tensor& image, const Tensor& text,
                                          const OptTensor& image_ids, const OptTensor& text_ids, double margin,
                                          bool normalize, bool image_grad, bool text_grad) {
  const c10::cuda::CUDAGuard guard(image.device());
  const CudaSide a = prepare(image, image_ids, normalize), b = prepare(text, text_ids, normalize);
  const Tensor w = grad_row_loss.to(at::kFloat).contiguous();
  return {image_grad ? side_grad(a, b, margin, w, true).to(image.scalar_type()) : image.new_empty({0}),
          text_grad ? side_grad(b, a, margin, w, false).to(text.scalar_type()) : text.new_empty({0})};
}

Tensor draw(const CudaSide& a, const CudaSide& b, const Tensor& inv_tau, uint64_t seed, uint64_t stream) {
  Tensor best = at::full({a.n}, -INFINITY, a.x.options());
  Tensor index = at::full({a.n}, -1, a.x.options().dtype(at::kLong));
  for_each_tile(a, b, [&](Tensor& tile, int64_t a0, int64_t na, int64_t b0, int64_t nb) {
    gpu::launch_negatives(tile.data_ptr<float>(), a.at(a0, na), b.at(b0, nb), inv_tau.data_ptr<float>(), seed,
                          stream, best.data_ptr<float>(), index.data_ptr<int64_t>());
  });
  return index;
}

NegativesResult negatives_cuda(const Tensor& image, const Tensor& text, const Tensor& temperature,
                               const OptTensor& image_ids, const OptTensor& text_ids, int64_t seed) {
  const c10::cuda::CUDAGuard guard(image.device());
  const CudaSide a = prepare(image, image_ids, false), b = prepare(text, text_ids, false);
  const Tensor inv_tau = temperature.to(at::kFloat).reciprocal().reshape({1});
  const auto key = static_cast<uint64_t>(seed);
  return {draw(a, b, inv_tau, key, 0), draw(b, a, inv_tau, key, 1)};
}

[[maybe_unused]] const bool registered =
    (itm_margin_backends().add("cuda", {margin_forward_cuda, margin_backward_cuda}),
     hard_negatives_backends().add("cuda", {negatives_cuda}), true);

}  // namespace
}  // namespace fastadapter
