// The contrastive op's cpu backend: the features in float32 (copies only for bf16/fp16 inputs), their inverse norms
// and the kernels of forward.cpp and backward.cpp. Registered as "cpu" in contrastive_backends().
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "../contrastive.h"
#include "kernels.h"

namespace fastadapter {
namespace {

// Per-thread partials of the other side's grad beyond this many bytes: sweep twice instead (one more GEMM).
constexpr int64_t kPartialBudgetBytes = int64_t(64) << 20;

struct Prepared {
  Tensor x, inv_norm, ids, soft, soft_inv_norm;
  cpu::Side side;
};

Tensor inverse_norms(const Tensor& x) { return at::linalg_vector_norm(x, 2, {1}).clamp_min(1e-12).reciprocal(); }

Prepared prepare(const Tensor& features, const OptTensor& ids, const OptTensor& soft, bool normalize) {
  Prepared p;
  p.x = features.to(at::kFloat).contiguous();
  if (normalize) p.inv_norm = inverse_norms(p.x);
  if (ids) p.ids = ids->to(at::kLong).contiguous();
  if (soft) {
    p.soft = soft->to(at::kFloat).contiguous();
    if (normalize) p.soft_inv_norm = inverse_norms(p.soft);
  }
  const auto ptr = [](const Tensor& t) { return t.defined() ? t.data_ptr<float>() : nullptr; };
  p.side = {p.x.data_ptr<float>(), ptr(p.inv_norm), p.ids.defined() ? p.ids.data_ptr<int64_t>() : nullptr,
            ptr(p.soft), ptr(p.soft_inv_norm), p.x.size(0), p.x.size(1), p.soft.defined() ? p.soft.size(1) : 0};
  return p;
}

float inverse_temperature(const Tensor& temperature) { return static_cast<float>(1.0 / temperature.item<double>()); }

ContrastiveForwardResult forward_cpu(const Tensor& query, const Tensor& keys, const Tensor& temperature,
                                     const OptTensor& query_ids, const OptTensor& key_ids, const OptTensor& soft_query,
                                     const OptTensor& soft_keys, double alpha, bool normalize, bool rows,
                                     bool columns) {
  const Prepared q = prepare(query, query_ids, soft_query, normalize);
  const Prepared k = prepare(keys, key_ids, soft_keys, normalize);
  const auto f32 = query.options().dtype(at::kFloat);
  const auto outputs = [&](bool wanted, int64_t n) {
    return std::make_pair(at::empty({wanted ? n : 0}, f32), at::empty({3, wanted ? n : 0}, f32));
  };
  auto [row_loss, row_stats] = outputs(rows, q.side.n);
  auto [column_loss, column_stats] = outputs(columns, k.side.n);
  const float inv_tau = inverse_temperature(temperature);
  const auto stats = [](Tensor& t) { return cpu::stats_of(t.data_ptr<float>(), t.size(1)); };
  if (rows) {
    cpu::contrastive_forward_tiles(q.side, k.side, inv_tau, alpha, columns, row_loss.data_ptr<float>(),
                                   stats(row_stats), columns ? column_loss.data_ptr<float>() : nullptr,
                                   columns ? stats(column_stats) : cpu::Stats{nullptr, nullptr, nullptr});
  } else {  // columns only: they are the rows of the swapped problem
    cpu::contrastive_forward_tiles(k.side, q.side, inv_tau, alpha, false, column_loss.data_ptr<float>(),
                                   stats(column_stats), nullptr, cpu::Stats{nullptr, nullptr, nullptr});
  }
  return {row_loss, column_loss, row_stats, column_stats};
}

// A direction's grads and statistics as the kernels take them; unused without grads or without statistics.
cpu::Direction direction(const OptTensor& grad, const Tensor& stats, Tensor& grad_storage, Tensor& stats_storage) {
  if (!grad || stats.size(1) == 0) return {};
  grad_storage = grad->to(at::kFloat).contiguous();
  stats_storage = stats.contiguous();
  return {grad_storage.data_ptr<float>(), cpu::stats_of(stats_storage.data_ptr<float>(), stats_storage.size(1))};
}

ContrastiveBackwardResult backward_cpu(const OptTensor& grad_row_loss, const OptTensor& grad_column_loss,
                                       const Tensor& query, const Tensor& keys, const Tensor& temperature,
                                       const OptTensor& query_ids, const OptTensor& key_ids,
                                       const OptTensor& soft_query, const OptTensor& soft_keys, double alpha,
                                       bool normalize, const Tensor& row_stats, const Tensor& column_stats,
                                       bool query_grad, bool keys_grad, bool temperature_grad) {
  const Prepared q = prepare(query, query_ids, soft_query, normalize);
  const Prepared k = prepare(keys, key_ids, soft_keys, normalize);
  Tensor g_row, g_col, s_row, s_col;
  const cpu::Direction rows = direction(grad_row_loss, row_stats, g_row, s_row);
  const cpu::Direction columns = direction(grad_column_loss, column_stats, g_col, s_col);
  const float inv_tau = inverse_temperature(temperature);
  const auto f32 = query.options().dtype(at::kFloat);
  Tensor grad_q = query_grad ? at::empty(query.sizes(), f32) : Tensor();
  Tensor grad_k = keys_grad ? at::zeros(keys.sizes(), f32) : Tensor();
  const bool query_sweep = query_grad || temperature_grad;
  const int64_t partial_bytes = int64_t(at::get_num_threads() - 1) * keys.numel() * 4;
  const bool fused = query_sweep && keys_grad && partial_bytes <= kPartialBudgetBytes;
  const auto ptr = [](Tensor& t, bool on) { return on ? t.data_ptr<float>() : nullptr; };
  double r_sum = 0.0;
  if (query_sweep) {
    r_sum = cpu::contrastive_backward_tiles(q.side, k.side, rows, columns, inv_tau, alpha, ptr(grad_q, query_grad),
                                            ptr(grad_k, fused));
  }
  if (keys_grad && !fused) {
    const double keys_r = cpu::contrastive_backward_tiles(k.side, q.side, columns, rows, inv_tau, alpha,
                                                          grad_k.data_ptr<float>(), nullptr);
    if (!query_sweep) r_sum = keys_r;
  }
  // grad tau = sum dS * dS/dtau = -sum dS S / tau.
  const Tensor grad_tau = temperature_grad ? at::full({}, -r_sum * inv_tau, temperature.options())
                                           : temperature.new_empty({0});
  return {query_grad ? grad_q.to(query.scalar_type()) : query.new_empty({0}),
          keys_grad ? grad_k.to(keys.scalar_type()) : keys.new_empty({0}), grad_tau};
}

[[maybe_unused]] const bool registered = (contrastive_backends().add("cpu", {forward_cpu, backward_cpu}), true);

}  // namespace
}  // namespace fastadapter
