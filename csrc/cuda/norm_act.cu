// CUDA kernels of the adapter's fused middle: norm + activation, one warp per row. Math is float32
// whatever the storage dtype. Parameter grads are reduced per block in shared memory (one slice per
// warp, no atomics) and then across blocks by at::sum, so they are deterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../fastadapter.h"

namespace fastadapter {
namespace {

constexpr int kWarpSize = 32;
constexpr int kForwardWarps = 8;
constexpr int64_t kSharedFloats = 12288;  // 48 KiB of accumulators per block

template <Activation A>
struct Act;

template <>
struct Act<Activation::Gelu> {
  static __device__ float value(float z) { return 0.5f * z * (1.f + erff(z * kSqrtHalf)); }
  static __device__ float grad(float z) {
    return 0.5f * (1.f + erff(z * kSqrtHalf)) + z * __expf(-0.5f * z * z) * kInvSqrt2Pi;
  }
};

template <>
struct Act<Activation::GeluTanh> {
  static __device__ float value(float z) {
    return 0.5f * z * (1.f + tanhf(kSqrt2OverPi * (z + kGeluTanhCubic * z * z * z)));
  }
  static __device__ float grad(float z) {
    const float t = tanhf(kSqrt2OverPi * (z + kGeluTanhCubic * z * z * z));
    return 0.5f * (1.f + t) + 0.5f * z * (1.f - t * t) * kSqrt2OverPi * (1.f + 3.f * kGeluTanhCubic * z * z);
  }
};

template <>
struct Act<Activation::Relu> {
  static __device__ float value(float z) { return z > 0.f ? z : 0.f; }
  static __device__ float grad(float z) { return z > 0.f ? 1.f : 0.f; }
};

template <>
struct Act<Activation::Silu> {
  static __device__ float value(float z) { return z / (1.f + __expf(-z)); }
  static __device__ float grad(float z) {
    const float s = 1.f / (1.f + __expf(-z));
    return s * (1.f + z * (1.f - s));
  }
};

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

template <typename T, Norm N>
__device__ void row_statistics(const T* h, int r, float eps, int lane, float& mean, float& rstd) {
  float m = 0.f;
  if constexpr (N == Norm::LayerNorm) {
    float s = 0.f;
    for (int j = lane; j < r; j += kWarpSize) s += static_cast<float>(h[j]);
    m = warp_sum(s) / r;
  }
  float q = 0.f;
  for (int j = lane; j < r; j += kWarpSize) {
    const float d = static_cast<float>(h[j]) - m;
    q += d * d;
  }
  mean = m;
  rstd = rsqrtf(warp_sum(q) / r + eps);
}

template <typename T, Activation A, Norm N>
__global__ void forward_kernel(const T* __restrict__ h, const float* __restrict__ w, const float* __restrict__ b,
                               int64_t rows, int r, float eps, T* __restrict__ a, float* __restrict__ mean,
                               float* __restrict__ rstd) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kForwardWarps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kForwardWarps + threadIdx.x / kWarpSize; i < rows;
       i += stride) {
    const T* hr = h + i * r;
    float m, rs;
    row_statistics<T, N>(hr, r, eps, lane, m, rs);
    for (int j = lane; j < r; j += kWarpSize) {
      const float z = (static_cast<float>(hr[j]) - m) * rs * w[j] + (b ? b[j] : 0.f);
      a[i * r + j] = static_cast<T>(Act<A>::value(z));
    }
    if (lane == 0) {
      mean[i] = m;
      rstd[i] = rs;
    }
  }
}

// Each block writes its partial sums of (grad_weight, grad_bias, sum grad_h) to partial[blockIdx].
template <typename T, Activation A, Norm N>
__global__ void backward_kernel(const T* __restrict__ grad_a, const T* __restrict__ h,
                                const float* __restrict__ mean, const float* __restrict__ rstd,
                                const float* __restrict__ w, const float* __restrict__ b, int64_t rows, int r,
                                T* __restrict__ a, T* __restrict__ grad_h, float* __restrict__ partial) {
  extern __shared__ float shared[];
  const int warps = blockDim.x / kWarpSize;
  const int warp = threadIdx.x / kWarpSize, lane = threadIdx.x % kWarpSize;
  float* acc = shared + static_cast<int64_t>(warp) * 3 * r;
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
      const float z = xhat * w[j] + (b ? b[j] : 0.f);
      a[i * r + j] = static_cast<T>(Act<A>::value(z));
      const float gz = static_cast<float>(gr[j]) * Act<A>::grad(z);
      acc[j] += gz * xhat;
      acc[r + j] += gz;
      const float gx = gz * w[j];
      sum_g += gx;
      sum_gx += gx * xhat;
    }
    const float mean_g = N == Norm::LayerNorm ? warp_sum(sum_g) / r : 0.f;
    const float mean_gx = warp_sum(sum_gx) / r;
    for (int j = lane; j < r; j += kWarpSize) {
      const float xhat = (static_cast<float>(hr[j]) - m) * rs;
      const float z = xhat * w[j] + (b ? b[j] : 0.f);
      const float gx = static_cast<float>(gr[j]) * Act<A>::grad(z) * w[j];
      const float g = rs * (gx - mean_g - xhat * mean_gx);
      grad_h[i * r + j] = static_cast<T>(g);
      acc[2 * r + j] += g;
    }
  }
  __syncthreads();
  for (int j = threadIdx.x; j < 3 * r; j += blockDim.x) {
    float s = 0.f;
    for (int k = 0; k < warps; ++k) s += shared[static_cast<int64_t>(k) * 3 * r + j];
    partial[static_cast<int64_t>(blockIdx.x) * 3 * r + j] = s;
  }
}

int grid_size(int64_t rows, int rows_per_block, int blocks_per_sm) {
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  const int64_t needed = (rows + rows_per_block - 1) / rows_per_block;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(needed, static_cast<int64_t>(sms) * blocks_per_sm)));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_forward_cuda(const at::Tensor& h, const at::Tensor& weight,
                                                                     const std::optional<at::Tensor>& bias,
                                                                     c10::string_view activation,
                                                                     c10::string_view norm, double eps) {
  check_norm_act_inputs(h, weight, bias);
  const Activation act = parse_activation(std::string(activation));
  const Norm nrm = parse_norm(std::string(norm));
  const c10::cuda::CUDAGuard guard(h.device());
  const auto params = float_norm_params(weight, bias);  // not a structured binding: lambdas capture these
  const at::Tensor& w = params.first;
  const at::Tensor& b = params.second;
  const int64_t rows = h.size(0);
  const int r = static_cast<int>(h.size(1));
  at::Tensor a = at::empty_like(h);
  at::Tensor mean = at::empty({rows}, h.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({rows}, h.options().dtype(at::kFloat));
  if (rows == 0) return {a, mean, rstd};
  const int grid = grid_size(rows, kForwardWarps, 32);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "fastadapter_norm_act_forward_cuda", [&] {
    dispatch_activation_norm(act, nrm, [&](auto act_tag, auto norm_tag) {
      forward_kernel<scalar_t, decltype(act_tag)::value, decltype(norm_tag)::value>
          <<<grid, kForwardWarps * kWarpSize, 0, stream>>>(
              h.const_data_ptr<scalar_t>(), w.const_data_ptr<float>(), b.defined() ? b.const_data_ptr<float>() : nullptr,
              rows, r, static_cast<float>(eps), a.mutable_data_ptr<scalar_t>(), mean.mutable_data_ptr<float>(),
              rstd.mutable_data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {a, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> norm_act_backward_cuda(
    const at::Tensor& grad_a, const at::Tensor& h, const at::Tensor& mean, const at::Tensor& rstd,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, c10::string_view activation,
    c10::string_view norm) {
  check_norm_act_backward_inputs(grad_a, h, mean, rstd, weight, bias);
  const int64_t rows = h.size(0);
  const int r = static_cast<int>(h.size(1));
  TORCH_CHECK(3 * static_cast<int64_t>(r) <= kSharedFloats, "fastadapter: the cuda backend supports a bottleneck of at most ",
              kSharedFloats / 3, ", got ", r, "; use backend='triton' or 'eager'");
  const Activation act = parse_activation(std::string(activation));
  const Norm nrm = parse_norm(std::string(norm));
  const c10::cuda::CUDAGuard guard(h.device());
  const at::Tensor g = grad_a.contiguous();
  const at::Tensor m = mean.contiguous(), s = rstd.contiguous();
  const auto params = float_norm_params(weight, bias);  // not a structured binding: lambdas capture these
  const at::Tensor& w = params.first;
  const at::Tensor& b = params.second;
  at::Tensor a = at::empty_like(h);
  at::Tensor grad_h = at::empty_like(h);
  const int warps = static_cast<int>(std::clamp<int64_t>(kSharedFloats / (3 * static_cast<int64_t>(r)), 1, 8));
  const int grid = rows == 0 ? 1 : grid_size(rows, warps, 4);
  at::Tensor partial = at::zeros({grid, 3, r}, h.options().dtype(at::kFloat));
  if (rows > 0) {
    const size_t shared_bytes = static_cast<size_t>(warps) * 3 * r * sizeof(float);
    const auto stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "fastadapter_norm_act_backward_cuda", [&] {
      dispatch_activation_norm(act, nrm, [&](auto act_tag, auto norm_tag) {
        backward_kernel<scalar_t, decltype(act_tag)::value, decltype(norm_tag)::value>
            <<<grid, warps * kWarpSize, shared_bytes, stream>>>(
                g.const_data_ptr<scalar_t>(), h.const_data_ptr<scalar_t>(), m.const_data_ptr<float>(),
                s.const_data_ptr<float>(), w.const_data_ptr<float>(), b.defined() ? b.const_data_ptr<float>() : nullptr,
                rows, r, a.mutable_data_ptr<scalar_t>(), grad_h.mutable_data_ptr<scalar_t>(),
                partial.mutable_data_ptr<float>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  // Outputs must not alias: each grad is its own copy of a row of the reduced sums.
  const at::Tensor sums = partial.sum(0);
  return {a, grad_h, sums[0].to(weight.scalar_type(), false, true), sums[1].to(weight.scalar_type(), false, true),
          sums[2].to(h.scalar_type(), false, true)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastadapter, CUDA, m) {
  m.impl("norm_act_forward", &norm_act_forward_cuda);
  m.impl("norm_act_backward", &norm_act_backward_cuda);
}

}  // namespace fastadapter
