// The contrastive op's CUDA tile kernels (declared in tiles.cuh). A tile is the raw float32 GEMM of A's rows
// against B's rows; each kernel scales it to logits S = <a, b> inv_tau / (|a| |b|) as it reads. Rows: a block
// per row, two passes (max, then the sums); columns: a thread per column walking the rows, coalesced across the
// warp. The tiles run in stream order, so the running statistics need no atomics.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <cfloat>

#include "../../common/cuda/block_reduce.cuh"
#include "tiles.cuh"

namespace fastadapter::gpu {
namespace {

constexpr float kNegInf = -INFINITY;

__device__ float scale_of(const float* inv_norm, int64_t index) { return inv_norm ? inv_norm[index] : 1.f; }

__device__ bool positive(const TileSide& a, const TileSide& b, int64_t i, int64_t j) {
  return a.ids ? a.ids[a.offset + i] == b.ids[b.offset + j] : a.offset + i == b.offset + j;
}

__global__ void row_stats_kernel(const float* __restrict__ s, const float* __restrict__ m, TileSide a, TileSide b,
                                 const float* inv_tau, Running rows) {
  const int64_t i = blockIdx.x, nb = b.count, gi = a.offset + i;
  const float sa = *inv_tau * scale_of(a.inv_norm, gi), ssa = *inv_tau * scale_of(a.soft_inv_norm, gi);
  const float* row = s + i * nb;
  const float* soft_row = m ? m + i * nb : nullptr;
  float mx = kNegInf, soft_mx = kNegInf;
  for (int64_t j = threadIdx.x; j < nb; j += kThreads) {
    mx = fmaxf(mx, row[j] * sa * scale_of(b.inv_norm, b.offset + j));
    if (m) soft_mx = fmaxf(soft_mx, soft_row[j] * ssa * scale_of(b.soft_inv_norm, b.offset + j));
  }
  const float new_max = fmaxf(rows.max[gi], block_reduce(mx, Max()));
  const float new_soft_max = m ? fmaxf(rows.soft_max[gi], block_reduce(soft_mx, Max())) : 0.f;
  float sum = 0.f, hard = 0.f, count = 0.f, soft_sum = 0.f, soft_acc = 0.f;
  for (int64_t j = threadIdx.x; j < nb; j += kThreads) {
    const float v = row[j] * sa * scale_of(b.inv_norm, b.offset + j);
    sum += __expf(v - new_max);
    if (positive(a, b, i, j)) {
      hard += v;
      count += 1.f;
    }
    if (m) {
      const float e = __expf(soft_row[j] * ssa * scale_of(b.soft_inv_norm, b.offset + j) - new_soft_max);
      soft_sum += e;
      soft_acc += e * v;
    }
  }
  sum = block_reduce(sum, Sum());
  hard = block_reduce(hard, Sum());
  count = block_reduce(count, Sum());
  if (m) {
    soft_sum = block_reduce(soft_sum, Sum());
    soft_acc = block_reduce(soft_acc, Sum());
  }
  if (threadIdx.x != 0) return;
  rows.sum[gi] = rows.sum[gi] * expf(rows.max[gi] - new_max) + sum;  // exp(-inf) = 0 on the first tile
  rows.max[gi] = new_max;
  rows.hard[gi] += hard;
  rows.count[gi] += count;
  if (m) {
    const float rescale = expf(rows.soft_max[gi] - new_soft_max);
    rows.soft_sum[gi] = rows.soft_sum[gi] * rescale + soft_sum;
    rows.soft_acc[gi] = rows.soft_acc[gi] * rescale + soft_acc;
    rows.soft_max[gi] = new_soft_max;
  }
}

__global__ void column_stats_kernel(const float* __restrict__ s, const float* __restrict__ m, TileSide a,
                                    TileSide b, const float* inv_tau, Running cols) {
  const int64_t j = blockIdx.x * int64_t(kThreads) + threadIdx.x, nb = b.count;
  if (j >= nb) return;
  const int64_t gj = b.offset + j;
  const float sb = *inv_tau * scale_of(b.inv_norm, gj), ssb = *inv_tau * scale_of(b.soft_inv_norm, gj);
  float mx = cols.max[gj], soft_mx = m ? cols.soft_max[gj] : 0.f;
  for (int64_t i = 0; i < a.count; ++i) {
    mx = fmaxf(mx, s[i * nb + j] * sb * scale_of(a.inv_norm, a.offset + i));
    if (m) soft_mx = fmaxf(soft_mx, m[i * nb + j] * ssb * scale_of(a.soft_inv_norm, a.offset + i));
  }
  float sum = cols.sum[gj] * expf(cols.max[gj] - mx), hard = 0.f, count = 0.f;
  const float rescale = m ? expf(cols.soft_max[gj] - soft_mx) : 0.f;
  float soft_sum = m ? cols.soft_sum[gj] * rescale : 0.f, soft_acc = m ? cols.soft_acc[gj] * rescale : 0.f;
  for (int64_t i = 0; i < a.count; ++i) {
    const float v = s[i * nb + j] * sb * scale_of(a.inv_norm, a.offset + i);
    sum += __expf(v - mx);
    if (positive(a, b, i, j)) {
      hard += v;
      count += 1.f;
    }
    if (m) {
      const float e = __expf(m[i * nb + j] * ssb * scale_of(a.soft_inv_norm, a.offset + i) - soft_mx);
      soft_sum += e;
      soft_acc += e * v;
    }
  }
  cols.max[gj] = mx;
  cols.sum[gj] = sum;
  cols.hard[gj] += hard;
  cols.count[gj] += count;
  if (m) {
    cols.soft_max[gj] = soft_mx;
    cols.soft_sum[gj] = soft_sum;
    cols.soft_acc[gj] = soft_acc;
  }
}

__global__ void finish_stats_kernel(Running r, int64_t n, float alpha, float* loss, float* stats) {
  const int64_t k = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (k >= n) return;
  const float lse = r.max[k] + logf(r.sum[k]);
  float value = lse - (1.f - alpha) * r.hard[k] / r.count[k];
  if (r.soft_sum) value -= alpha * r.soft_acc[k] / r.soft_sum[k];
  loss[k] = value;
  stats[k] = lse;
  stats[n + k] = r.soft_sum ? r.soft_max[k] + logf(r.soft_sum[k]) : 0.f;
  stats[2 * n + k] = r.count[k];
}

// d loss / d S of one direction at (i, j): g (softmax - targets), the statistics at `index` of that direction.
__device__ float direction_term(const GradDirection& d, int64_t index, float v, float soft_v, bool pos, float alpha,
                                bool soft) {
  const float* st = d.stats;
  float t = pos ? (1.f - alpha) / st[2 * d.n + index] : 0.f;
  if (soft) t += alpha * __expf(soft_v - st[d.n + index]);
  return d.grad[index] * (__expf(v - st[index]) - t);
}

template <typename scalar_t>
__global__ void grad_tile_kernel(float* __restrict__ s, const float* __restrict__ m, TileSide a, TileSide b,
                                 const float* inv_tau, GradDirection rows, GradDirection columns, float alpha,
                                 scalar_t* __restrict__ g, scalar_t* __restrict__ h, float* r, bool products) {
  const int64_t i = blockIdx.x, nb = b.count, gi = a.offset + i;
  const float a_inv = scale_of(a.inv_norm, gi);
  const float sa = *inv_tau * a_inv, ssa = *inv_tau * scale_of(a.soft_inv_norm, gi);
  float r_sum = 0.f;
  for (int64_t j = threadIdx.x; j < nb; j += kThreads) {
    const int64_t gj = b.offset + j;
    const float b_inv = scale_of(b.inv_norm, gj);
    const float v = s[i * nb + j] * sa * b_inv;
    const float soft_v = m ? m[i * nb + j] * ssa * scale_of(b.soft_inv_norm, gj) : 0.f;
    const bool pos = positive(a, b, i, j);
    float ds = 0.f;
    if (rows.grad) ds += direction_term(rows, gi, v, soft_v, pos, alpha, m != nullptr);
    if (columns.grad) ds += direction_term(columns, gj, v, soft_v, pos, alpha, m != nullptr);
    r_sum += ds * v;
    g[i * nb + j] = static_cast<scalar_t>(ds * b_inv);
    if (h) h[i * nb + j] = static_cast<scalar_t>(ds * a_inv);
    if (products) s[i * nb + j] = ds * v;
  }
  r_sum = block_reduce(r_sum, Sum());
  if (threadIdx.x == 0) r[gi] += r_sum;
}

__global__ void column_sums_kernel(const float* __restrict__ s, int64_t na, int64_t nb, float* c) {
  const int64_t j = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (j >= nb) return;
  float total = 0.f;
  for (int64_t i = 0; i < na; ++i) total += s[i * nb + j];
  c[j] += total;
}

template <typename scalar_t>
__global__ void finish_grad_kernel(const float* __restrict__ u, const float* __restrict__ r, const float* inv_norm,
                                   const float* inv_tau, const scalar_t* __restrict__ x, scalar_t* grad, int64_t d) {
  const int64_t i = blockIdx.x;
  const float inv = scale_of(inv_norm, i);
  const float radial = inv_norm ? r[i] * inv * inv : 0.f;
  for (int64_t k = threadIdx.x; k < d; k += kThreads) {
    const float value = *inv_tau * inv * u[i * d + k] - radial * static_cast<float>(x[i * d + k]);
    grad[i * d + k] = static_cast<scalar_t>(value);
  }
}

int blocks_of(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

}  // namespace

void launch_row_stats(const float* s, const float* m, TileSide a, TileSide b, const float* inv_tau, Running rows) {
  row_stats_kernel<<<a.count, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(s, m, a, b, inv_tau, rows);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_column_stats(const float* s, const float* m, TileSide a, TileSide b, const float* inv_tau,
                         Running columns) {
  column_stats_kernel<<<blocks_of(b.count), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(s, m, a, b, inv_tau,
                                                                                              columns);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_finish_stats(Running r, int64_t n, float alpha, float* loss, float* stats) {
  finish_stats_kernel<<<blocks_of(n), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(r, n, alpha, loss, stats);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_grad_tile(float* s, const float* m, TileSide a, TileSide b, const float* inv_tau, GradDirection rows,
                      GradDirection columns, float alpha, at::Tensor& g, at::Tensor* h, float* r, bool products) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, g.scalar_type(), "contrastive_grad_tile", [&] {
    grad_tile_kernel<scalar_t><<<a.count, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        s, m, a, b, inv_tau, rows, columns, alpha, g.data_ptr<scalar_t>(), h ? h->data_ptr<scalar_t>() : nullptr, r,
        products);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_column_sums(const float* s, int64_t na, int64_t nb, float* c) {
  column_sums_kernel<<<blocks_of(nb), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(s, na, nb, c);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_finish_grad(const at::Tensor& u, const float* r, const float* inv_norm, const float* inv_tau,
                        const at::Tensor& x, at::Tensor& grad) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "contrastive_finish_grad", [&] {
    finish_grad_kernel<scalar_t><<<x.size(0), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        u.data_ptr<float>(), r, inv_norm, inv_tau, x.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), x.size(1));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastadapter::gpu
