// CUDA backward of the adapter's fused middle: recomputes a, and gives grad_h and the norm parameters' grads,
// one warp per row: a row-in-registers kernel with 16-byte loads where the row allows, else a general one.
// Parameter grads are reduced per block in shared memory (one slice per warp, no atomics) and then across
// blocks by a finishing kernel in a fixed order, so they are deterministic. The norm parameters and their grads
// are in h's dtype (math in float32).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "norm_act.cuh"

#include <algorithm>

namespace fastadapter::gpu {
namespace {

constexpr int64_t kSharedFloats = 12288;  // 48 KiB of shared memory per block (no opt-in needed)
constexpr int64_t kBackwardSharedPerR = 4;  // floats per bottleneck column per warp: 3 accumulators + grad_xhat

// Each block writes its partial sums of (grad_weight, grad_bias, sum grad_h) to partial[blockIdx]. A warp's
// shared slice holds those 3r accumulators and the r values grad_xhat of its current row: the second pass
// subtracts the row means from exactly the values they were taken over. (Recomputed, the product gz * w gets
// contracted into an FMA with the subtraction, whose rounding residual rstd then amplifies: for a row of
// near-zero variance, e.g. r = 1, grad_h came out ~1e-5 where it is exactly 0.)
template <typename T, Activation A, Norm N>
__global__ void backward_kernel(const T* __restrict__ grad_a, const T* __restrict__ h,
                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                const T* __restrict__ w, const T* __restrict__ b, int64_t rows, int r,
                                T* __restrict__ a, T* __restrict__ grad_h, float* __restrict__ partial) {
  extern __shared__ float shared[];
  const int warps = blockDim.x / kWarpSize;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  float* acc = shared + static_cast<int64_t>(warp) * kBackwardSharedPerR * r;
  float* grad_xhat = acc + 3 * r;
  for (int j = lane; j < 3 * r; j += kWarpSize) acc[j] = 0.f;
  __syncwarp();  // lanes go on to update entries that other lanes zeroed

  const int64_t stride = static_cast<int64_t>(gridDim.x) * warps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * warps + warp; i < rows; i += stride) {
    const T* hr = h + i * r;
    const T* gr = grad_a + i * r;
    const float m = mean[i], rs = rstd[i];
    float sum_g = 0.f, sum_gx = 0.f;
    for (int j = lane; j < r; j += kWarpSize) {
      const float xhat = (static_cast<float>(hr[j]) - m) * rs;
      const float wj = static_cast<float>(w[j]);
      const float z = xhat * wj + (b ? static_cast<float>(b[j]) : 0.f);
      a[i * r + j] = static_cast<T>(Act<A>::value(z));
      const float gz = static_cast<float>(gr[j]) * Act<A>::grad(z);
      acc[j] += gz * xhat;
      acc[r + j] += gz;
      const float gx = __fmul_rn(gz, wj);  // rounded once and never contracted: the row means are of these
      grad_xhat[j] = gx;  // each lane reads back only its own entries: no barrier needed
      sum_g += gx;
      sum_gx += gx * xhat;
    }
    const float mean_g = N == Norm::LayerNorm ? warp_sum(sum_g) / r : 0.f;
    const float mean_gx = warp_sum(sum_gx) / r;
    for (int j = lane; j < r; j += kWarpSize) {
      const float xhat = (static_cast<float>(hr[j]) - m) * rs;
      const float g = rs * (grad_xhat[j] - mean_g - xhat * mean_gx);
      grad_h[i * r + j] = static_cast<T>(g);
      acc[2 * r + j] += g;
    }
  }
  __syncthreads();
  for (int j = threadIdx.x; j < 3 * r; j += blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < warps; ++k) s += shared[static_cast<int64_t>(k) * kBackwardSharedPerR * r + j];
    partial[static_cast<int64_t>(blockIdx.x) * 3 * r + j] = s;
  }
}

// The parameter-grad sums stay in registers per lane until the end, then go through shared memory
// (3r floats per warp) to one partial row per block, as in backward_kernel.
template <typename T, int CHUNKS, Activation A, Norm N>
__global__ void backward_vec_kernel(const T* __restrict__ grad_a, const T* __restrict__ h,
                                    const float* __restrict__ mean, const float* __restrict__ rstd,
                                    const T* __restrict__ w, const T* __restrict__ b, int64_t rows, int r,
                                    T* __restrict__ a, T* __restrict__ grad_h, float* __restrict__ partial) {
  constexpr int V = Pack<T>::kSize;
  extern __shared__ float shared[];
  const int warps = blockDim.x / kWarpSize;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  const int packs = r / V;
  float wr[CHUNKS][V], br[CHUNKS][V];
  load_params(w, b, packs, lane, wr, br);
  float acc_w[CHUNKS][V] = {}, acc_b[CHUNKS][V] = {}, acc_h[CHUNKS][V] = {};

  const int64_t stride = static_cast<int64_t>(gridDim.x) * warps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * warps + warp; i < rows; i += stride) {
    float xhat[CHUNKS][V], gx[CHUNKS][V];
    load_row(h + i * r, packs, lane, xhat);
    load_row(grad_a + i * r, packs, lane, gx);
    const float m = mean[i], rs = rstd[i];
    float sum_g = 0.f, sum_gx = 0.f;
    for_each_pack<CHUNKS>(packs, lane, [&](int c, int p) {
      Pack<T> out;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        xhat[c][k] = (xhat[c][k] - m) * rs;
        const float z = xhat[c][k] * wr[c][k] + br[c][k];
        out.v[k] = static_cast<T>(Act<A>::value(z));
        const float gz = gx[c][k] * Act<A>::grad(z);
        acc_w[c][k] += gz * xhat[c][k];
        acc_b[c][k] += gz;
        gx[c][k] = __fmul_rn(gz, wr[c][k]);  // rounded once, never contracted: the mean below is of these
        sum_g += gx[c][k];
        sum_gx += gx[c][k] * xhat[c][k];
      }
      reinterpret_cast<Pack<T>*>(a + i * r)[p] = out;
    });
    const float mean_g = N == Norm::LayerNorm ? warp_sum(sum_g) / r : 0.f;
    const float mean_gx = warp_sum(sum_gx) / r;
    for_each_pack<CHUNKS>(packs, lane, [&](int c, int p) {
      Pack<T> out;
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const float g = rs * (gx[c][k] - mean_g - xhat[c][k] * mean_gx);
        out.v[k] = static_cast<T>(g);
        acc_h[c][k] += g;
      }
      reinterpret_cast<Pack<T>*>(grad_h + i * r)[p] = out;
    });
  }
  float* slice = shared + static_cast<int64_t>(warp) * 3 * r;
  for_each_pack<CHUNKS>(packs, lane, [&](int c, int p) {
#pragma unroll
    for (int k = 0; k < V; ++k) {
      slice[p * V + k] = acc_w[c][k];
      slice[r + p * V + k] = acc_b[c][k];
      slice[2 * r + p * V + k] = acc_h[c][k];
    }
  });
  __syncthreads();
  for (int j = threadIdx.x; j < 3 * r; j += blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < warps; ++k) s += shared[static_cast<int64_t>(k) * 3 * r + j];
    partial[static_cast<int64_t>(blockIdx.x) * 3 * r + j] = s;
  }
}

// Sums the blocks' partial rows (blocks, 3, r) column by column into the three grads, in h's dtype: one launch
// instead of a sum and three casts. Summed in double in a fixed order, so deterministic and not less exact than
// at::sum.
template <typename T>
__global__ void finish_sums_kernel(const float* __restrict__ partial, int blocks, int r, T* __restrict__ grad_weight,
                                   T* __restrict__ grad_bias, T* __restrict__ grad_h_sum) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= 3 * r) return;
  double s = 0.0;
  for (int k = 0; k < blocks; ++k) s += partial[static_cast<int64_t>(k) * 3 * r + j];
  T* const out = j < r ? grad_weight : j < 2 * r ? grad_bias : grad_h_sum;
  out[j % r] = static_cast<T>(s);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_launch(
    const at::Tensor& grad_a, const at::Tensor& h, const at::Tensor& mean, const at::Tensor& rstd,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, c10::string_view activation,
    c10::string_view norm) {
  check_norm_act_backward_inputs(grad_a, h, mean, rstd, weight, bias);
  const int64_t rows = h.size(0);
  const int r = static_cast<int>(h.size(1));
  TORCH_CHECK(kBackwardSharedPerR * static_cast<int64_t>(r) <= kSharedFloats,
              "fastadapter: the cuda backend supports a bottleneck of at most ", kSharedFloats / kBackwardSharedPerR,
              ", got ", r, "; use backend='triton', 'torch' or 'eager'");
  const Activation act = parse_activation(std::string(activation));
  const Norm nrm = parse_norm(std::string(norm));
  const c10::cuda::CUDAGuard guard(h.device());
  const at::Tensor g = grad_a.contiguous();
  const at::Tensor m = mean.contiguous(), s = rstd.contiguous();
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  at::Tensor a = at::empty_like(h);
  at::Tensor grad_h = at::empty_like(h);
  if (rows == 0) {
    return {a, grad_h, at::zeros({r}, h.options()), at::zeros({r}, h.options()), at::zeros({r}, h.options())};
  }
  // Three tensors, not rows of one: the op's outputs must not alias.
  at::Tensor grad_weight = at::empty({r}, h.options());
  at::Tensor grad_bias = at::empty({r}, h.options());
  at::Tensor grad_h_sum = at::empty({r}, h.options());
  const int chunks = vector_chunks(r, h.element_size(),
                                   {g.const_data_ptr(), h.const_data_ptr(), a.const_data_ptr(),
                                    grad_h.const_data_ptr()},
                                   kMaxBackwardChunks);
  const int64_t shared_per_r = chunks > 0 ? 3 : kBackwardSharedPerR;  // the vector kernel keeps grad_xhat in registers
  const int warps = static_cast<int>(std::clamp<int64_t>(kSharedFloats / (shared_per_r * r), 1, 8));
  const int grid = grid_size(rows, warps, 4);
  // Every block writes its whole partial row, so no zeroing.
  at::Tensor partial = at::empty({grid, 3, r}, h.options().dtype(at::kFloat));
  const size_t shared_bytes = static_cast<size_t>(warps * shared_per_r * r) * sizeof(float);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "fastadapter_norm_act_backward_cuda", [&] {
    dispatch_kernel<kMaxBackwardChunks>(act, nrm, chunks, [&](auto act_tag, auto norm_tag, auto chunks_tag) {
      constexpr int kChunks = decltype(chunks_tag)::value;
      const auto kernel = pick_kernel<kChunks>(
          backward_vec_kernel<scalar_t, std::max(kChunks, 1), decltype(act_tag)::value, decltype(norm_tag)::value>,
          backward_kernel<scalar_t, decltype(act_tag)::value, decltype(norm_tag)::value>);
      kernel<<<grid, warps * kWarpSize, shared_bytes, stream>>>(
          g.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(), m.const_data_ptr<float>(),
          s.const_data_ptr<float>(), w.const_data_ptr<scalar_t>(),
          b.defined() ? b.const_data_ptr<scalar_t>() : nullptr, rows, r, a.mutable_data_ptr<scalar_t>(),
          grad_h.mutable_data_ptr<scalar_t>(), partial.mutable_data_ptr<float>());
    });
    constexpr int kFinishThreads = 256;
    finish_sums_kernel<scalar_t><<<(3 * r + kFinishThreads - 1) / kFinishThreads, kFinishThreads, 0, stream>>>(
        partial.const_data_ptr<float>(), grid, r, grad_weight.mutable_data_ptr<scalar_t>(),
        grad_bias.mutable_data_ptr<scalar_t>(), grad_h_sum.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {a, grad_h, grad_weight, grad_bias, grad_h_sum};
}

}  // namespace

}  // namespace fastadapter::gpu

namespace fastadapter {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> norm_act_backward_cuda(
    const at::Tensor& grad_a, const at::Tensor& h, const at::Tensor& mean, const at::Tensor& rstd,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, c10::string_view activation,
    c10::string_view norm) {
  return gpu::backward_launch(grad_a, h, mean, rstd, weight, bias, activation, norm);
}

}  // namespace fastadapter
