// The contrastive op's cuda backend: tiles of up to kTile x kTile logits, each a cuBLAS GEMM (ATen; bf16/fp16
// on tensor cores with float32 output) followed by the tile kernels of tiles.cu, which keep the running row and
// column statistics in O(N) float32 arrays. Backward recomputes each tile, forms dS, and accumulates both sides'
// grads with two more GEMMs (float32 accumulators of N x d). Memory: a few tile buffers, never N x N.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/version.h>

#include <algorithm>

#include "../contrastive.h"
#include "tiles.cuh"

// mm with a float32 output from bf16/fp16 inputs (aten::mm.dtype) exists from torch 2.8 on; before, the tile
// GEMMs run on float32 copies.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 8)
#define FASTADAPTER_MM_FLOAT_OUT 1
#endif

namespace fastadapter {
namespace {

constexpr int64_t kTile = 4096;  // 64 MiB of float32 logits per tile buffer

struct CudaSide {
  Tensor x, inv, ids, soft, soft_inv;
  int64_t n = 0;
  gpu::TileSide at(int64_t offset, int64_t count) const {
    const auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
    return {ptr(inv), ptr(soft_inv), ids.defined() ? ids.data_ptr<int64_t>() : nullptr, offset, count};
  }
};

Tensor inverse_norms(const Tensor& x) {
  return at::linalg_vector_norm(x.to(at::kFloat), 2, {1}).clamp_min(1e-12).reciprocal();
}

CudaSide prepare(const Tensor& features, const OptTensor& ids, const OptTensor& soft, bool normalize) {
  CudaSide s;
  s.x = features.contiguous();
  s.n = s.x.size(0);
  if (normalize) s.inv = inverse_norms(s.x);
  if (ids) s.ids = ids->to(at::kLong).contiguous();
  if (soft) {
    s.soft = soft->to(s.x.scalar_type()).contiguous();
    if (normalize) s.soft_inv = inverse_norms(s.soft);
  }
  return s;
}

// out (float32) = a · b, on tensor cores for bf16/fp16 inputs.
Tensor& gemm_float(Tensor& out, const Tensor& a, const Tensor& b) {
  if (a.scalar_type() == at::kFloat) return at::mm_out(out, a, b);
#ifdef FASTADAPTER_MM_FLOAT_OUT
  return at::mm_out(out, a, b, at::kFloat);
#else
  return at::mm_out(out, a.to(at::kFloat), b.to(at::kFloat));
#endif
}

Tensor tile_view(Tensor& buffer, int64_t rows, int64_t cols) {
  return buffer.narrow(0, 0, rows * cols).view({rows, cols});
}

// The (7, n) running statistics of one direction: max, sum, hard, count, soft max, soft sum, soft acc.
Tensor new_running(int64_t n, const Tensor& like) {
  Tensor r = at::zeros({7, n}, like.options().dtype(at::kFloat));
  r[0].fill_(-INFINITY);
  r[4].fill_(-INFINITY);
  return r;
}

gpu::Running running_of(Tensor& r, bool soft) {
  float* p = r.data_ptr<float>();
  const int64_t n = r.size(1);
  return {p, p + n, p + 2 * n, p + 3 * n, soft ? p + 4 * n : nullptr, soft ? p + 5 * n : nullptr,
          soft ? p + 6 * n : nullptr};
}

Tensor inverse_temperature(const Tensor& temperature) { return temperature.to(at::kFloat).reciprocal().reshape({1}); }

ContrastiveForwardResult forward_cuda(const Tensor& query, const Tensor& keys, const Tensor& temperature,
                                      const OptTensor& query_ids, const OptTensor& key_ids,
                                      const OptTensor& soft_query, const OptTensor& soft_keys, double alpha,
                                      bool normalize, bool rows, bool columns) {
  const c10::cuda::CUDAGuard guard(query.device());
  const CudaSide q = prepare(query, query_ids, soft_query, normalize);
  const CudaSide k = prepare(keys, key_ids, soft_keys, normalize);
  const CudaSide& a = rows ? q : k;  // columns only: the rows of the swapped problem
  const CudaSide& b = rows ? k : q;
  const bool soft = soft_query.has_value(), both = rows && columns;
  const Tensor inv_tau = inverse_temperature(temperature);
  Tensor row_run = new_running(a.n, query), col_run = both ? new_running(b.n, query) : Tensor();
  const auto f32 = query.options().dtype(at::kFloat);
  Tensor s_buf = at::empty({std::min(kTile, a.n) * std::min(kTile, b.n)}, f32);
  Tensor m_buf = soft ? at::empty_like(s_buf) : Tensor();
  for (int64_t a0 = 0; a0 < a.n; a0 += kTile) {
    const int64_t na = std::min(kTile, a.n - a0);
    for (int64_t b0 = 0; b0 < b.n; b0 += kTile) {
      const int64_t nb = std::min(kTile, b.n - b0);
      Tensor s = tile_view(s_buf, na, nb);
      gemm_float(s, a.x.narrow(0, a0, na), b.x.narrow(0, b0, nb).t());
      Tensor m = soft ? tile_view(m_buf, na, nb) : Tensor();
      if (soft) gemm_float(m, a.soft.narrow(0, a0, na), b.soft.narrow(0, b0, nb).t());
      const float* m_ptr = soft ? m.data_ptr<float>() : nullptr;
      gpu::launch_row_stats(s.data_ptr<float>(), m_ptr, a.at(a0, na), b.at(b0, nb), inv_tau.data_ptr<float>(),
                            running_of(row_run, soft));
      if (both) {
        gpu::launch_column_stats(s.data_ptr<float>(), m_ptr, a.at(a0, na), b.at(b0, nb), inv_tau.data_ptr<float>(),
                                 running_of(col_run, soft));
      }
    }
  }
  const auto finish = [&](Tensor& run, int64_t n) {
    Tensor loss = at::empty({n}, f32), stats = at::empty({3, n}, f32);
    gpu::launch_finish_stats(running_of(run, soft), n, static_cast<float>(alpha), loss.data_ptr<float>(),
                             stats.data_ptr<float>());
    return std::make_pair(loss, stats);
  };
  const auto empty = std::make_pair(at::empty({0}, f32), at::empty({3, 0}, f32));
  auto first = finish(row_run, a.n);
  auto second = both ? finish(col_run, b.n) : empty;
  if (!rows) return {empty.first, first.first, empty.second, first.second};
  return {first.first, second.first, first.second, second.second};
}

gpu::GradDirection direction(const OptTensor& grad, const Tensor& stats, Tensor& grad32, Tensor& stats32) {
  if (!grad || stats.size(1) == 0) return {nullptr, nullptr, 0};
  grad32 = grad->to(at::kFloat).contiguous();
  stats32 = stats.contiguous();
  return {grad32.data_ptr<float>(), stats32.data_ptr<float>(), stats32.size(1)};
}

ContrastiveBackwardResult backward_cuda(const OptTensor& grad_row_loss, const OptTensor& grad_column_loss,
                                        const Tensor& query, const Tensor& keys, const Tensor& temperature,
                                        const OptTensor& query_ids, const OptTensor& key_ids,
                                        const OptTensor& soft_query, const OptTensor& soft_keys, double alpha,
                                        bool normalize, const Tensor& row_stats, const Tensor& column_stats,
                                        bool query_grad, bool keys_grad, bool temperature_grad) {
  const c10::cuda::CUDAGuard guard(query.device());
  const CudaSide q = prepare(query, query_ids, soft_query, normalize);
  const CudaSide k = prepare(keys, key_ids, soft_keys, normalize);
  Tensor g_row, g_col, s_row, s_col;
  const gpu::GradDirection rows = direction(grad_row_loss, row_stats, g_row, s_row);
  const gpu::GradDirection columns = direction(grad_column_loss, column_stats, g_col, s_col);
  const bool soft = soft_query.has_value();
  const Tensor inv_tau = inverse_temperature(temperature);
  const auto f32 = query.options().dtype(at::kFloat);
  const int64_t d = q.x.size(1);
  Tensor u = query_grad ? at::zeros({q.n, d}, f32) : Tensor(), v = keys_grad ? at::zeros({k.n, d}, f32) : Tensor();
  Tensor r = at::zeros({q.n}, f32), c = at::zeros({k.n}, f32);
  const int64_t tile_elems = std::min(kTile, q.n) * std::min(kTile, k.n);
  Tensor s_buf = at::empty({tile_elems}, f32), m_buf = soft ? at::empty_like(s_buf) : Tensor();
  Tensor g_buf = at::empty({tile_elems}, q.x.options()), h_buf = keys_grad ? at::empty_like(g_buf) : Tensor();
  Tensor product = at::empty({std::min(kTile, std::max(q.n, k.n)), d}, f32);
  for (int64_t a0 = 0; a0 < q.n; a0 += kTile) {
    const int64_t na = std::min(kTile, q.n - a0);
    for (int64_t b0 = 0; b0 < k.n; b0 += kTile) {
      const int64_t nb = std::min(kTile, k.n - b0);
      Tensor s = tile_view(s_buf, na, nb), g = tile_view(g_buf, na, nb);
      Tensor h = keys_grad ? tile_view(h_buf, na, nb) : Tensor();
      gemm_float(s, q.x.narrow(0, a0, na), k.x.narrow(0, b0, nb).t());
      Tensor m = soft ? tile_view(m_buf, na, nb) : Tensor();
      if (soft) gemm_float(m, q.soft.narrow(0, a0, na), k.soft.narrow(0, b0, nb).t());
      const bool products = keys_grad && normalize;
      gpu::launch_grad_tile(s.data_ptr<float>(), soft ? m.data_ptr<float>() : nullptr, q.at(a0, na), k.at(b0, nb),
                            inv_tau.data_ptr<float>(), rows, columns, static_cast<float>(alpha), g,
                            keys_grad ? &h : nullptr, r.data_ptr<float>(), products);
      if (products) gpu::launch_column_sums(s.data_ptr<float>(), na, nb, c.data_ptr<float>() + b0);
      if (query_grad) {
        Tensor p = product.narrow(0, 0, na);
        u.narrow(0, a0, na).add_(gemm_float(p, g, k.x.narrow(0, b0, nb)));
      }
      if (keys_grad) {
        Tensor p = product.narrow(0, 0, nb);
        v.narrow(0, b0, nb).add_(gemm_float(p, h.t(), q.x.narrow(0, a0, na)));
      }
    }
  }
  const auto finish = [&](const Tensor& acc, const Tensor& sums, const CudaSide& side) {
    Tensor grad = at::empty_like(side.x);
    gpu::launch_finish_grad(acc, sums.data_ptr<float>(), side.inv.defined() ? side.inv.data_ptr<float>() : nullptr,
                            inv_tau.data_ptr<float>(), side.x, grad);
    return grad;
  };
  const Tensor grad_tau = temperature_grad ? (r.sum() * inv_tau[0]).neg().to(temperature.scalar_type()).reshape({})
                                           : temperature.new_empty({0});
  return {query_grad ? finish(u, r, q) : query.new_empty({0}),
          keys_grad ? finish(v, c, k) : keys.new_empty({0}), grad_tau};
}

[[maybe_unused]] const bool registered = (contrastive_backends().add("cuda", {forward_cuda, backward_cuda}), true);

}  // namespace
}  // namespace fastadapter
