// CUDA forward of the adapter's fused middle: a = act(norm(h)) and the row statistics, one warp per row: a
// row-in-registers kernel with 16-byte loads where the row allows, else a general one (any r). Math is float32
// whatever the storage dtype.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "norm_act.cuh"

namespace fastadapter::gpu {
namespace {

constexpr int kForwardWarps = 8;

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
__global__ void forward_kernel(const T* __restrict__ h, const T* __restrict__ w, const T* __restrict__ b,
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
      const float z = (static_cast<float>(hr[j]) - m) * rs * static_cast<float>(w[j]) +
                      (b ? static_cast<float>(b[j]) : 0.f);
      a[i * r + j] = static_cast<T>(Act<A>::value(z));
    }
    if (lane == 0) {
      mean[i] = m;
      rstd[i] = rs;
    }
  }
}

// Mean (0 for RMSNorm) and rstd of a row held as x[CHUNKS][V] across the warp.
template <int CHUNKS, int V, Norm N>
__device__ __forceinline__ void row_statistics_vec(const float (&x)[CHUNKS][V], int packs, int r, float eps, int lane,
                                                   float& mean, float& rstd) {
  float m = 0.f;
  if constexpr (N == Norm::LayerNorm) {
    float s = 0.f;
    for_each_pack<CHUNKS>(packs, lane, [&](int c, int) {
#pragma unroll
      for (int k = 0; k < V; ++k) s += x[c][k];
    });
    m = warp_sum(s) / r;
  }
  float q = 0.f;
  for_each_pack<CHUNKS>(packs, lane, [&](int c, int) {
#pragma unroll
    for (int k = 0; k < V; ++k) q += (x[c][k] - m) * (x[c][k] - m);
  });
  mean = m;
  rstd = rsqrtf(warp_sum(q) / r + eps);
}

template <typename T, int CHUNKS, Activation A, Norm N>
__global__ void forward_vec_kernel(const T* __restrict__ h, const T* __restrict__ w, const T* __restrict__ b,
                                   int64_t rows, int r, float eps, T* __restrict__ a, float* __restrict__ mean,
                                   float* __restrict__ rstd) {
  constexpr int V = Pack<T>::kSize;
  const int lane = threadIdx.x % kWarpSize;
  const int packs = r / V;
  float wr[CHUNKS][V], br[CHUNKS][V];
  load_params(w, b, packs, lane, wr, br);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kForwardWarps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kForwardWarps + threadIdx.x / kWarpSize; i < rows;
       i += stride) {
    float x[CHUNKS][V];
    load_row(h + i * r, packs, lane, x);
    float m, rs;
    row_statistics_vec<CHUNKS, V, N>(x, packs, r, eps, lane, m, rs);
    for_each_pack<CHUNKS>(packs, lane, [&](int c, int p) {
      Pack<T> out;
#pragma unroll
      for (int k = 0; k < V; ++k) out.v[k] = static_cast<T>(Act<A>::value((x[c][k] - m) * rs * wr[c][k] + br[c][k]));
      reinterpret_cast<Pack<T>*>(a + i * r)[p] = out;
    });
    if (lane == 0) {
      mean[i] = m;
      rstd[i] = rs;
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_launch(const at::Tensor& h, const at::Tensor& weight,
                                                              const std::optional<at::Tensor>& bias,
                                                              c10::string_view activation, c10::string_view norm,
                                                              double eps) {
  check_norm_act_inputs(h, weight, bias);
  const Activation act = parse_activation(std::string(activation));
  const Norm nrm = parse_norm(std::string(norm));
  const c10::cuda::CUDAGuard guard(h.device());
  const at::Tensor w = weight.contiguous();
  const at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  const int64_t rows = h.size(0);
  const int r = static_cast<int>(h.size(1));
  at::Tensor a = at::empty_like(h);
  at::Tensor mean = at::empty({rows}, h.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({rows}, h.options().dtype(at::kFloat));
  if (rows == 0) return {a, mean, rstd};
  const int grid = grid_size(rows, kForwardWarps, 32);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "fastadapter_norm_act_forward_cuda", [&] {
    const int chunks = vector_chunks(r, sizeof(scalar_t), {h.const_data_ptr(), a.const_data_ptr()}, kMaxChunks);
    dispatch_kernel<kMaxChunks>(act, nrm, chunks, [&](auto act_tag, auto norm_tag, auto chunks_tag) {
      constexpr int kChunks = decltype(chunks_tag)::value;
      const auto kernel = pick_kernel<kChunks>(
          forward_vec_kernel<scalar_t, std::max(kChunks, 1), decltype(act_tag)::value, decltype(norm_tag)::value>,
          forward_kernel<scalar_t, decltype(act_tag)::value, decltype(norm_tag)::value>);
      kernel<<<grid, kForwardWarps * kWarpSize, 0, stream>>>(
          h.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
          b.defined() ? b.const_data_ptr<scalar_t>() : nullptr,
          rows, r, static_cast<float>(eps), a.mutable_data_ptr<scalar_t>(), mean.mutable_data_ptr<float>(),
          rstd.mutable_data_ptr<float>());
    });
  });
  return {a, mean, rstd};
}

}  // namespace

}  // namespace fastadapter::gpu

namespace fastadapter {

std::tuple<at::Tensor, at::Tensor, at::Tensor> norm_act_forward_cuda(const at::Tensor& h, const at::Tensor& weight,
                                                                     const std::optional<at::Tensor>& bias,
                                                                     c10::string_view activation,
                                                                     c10::string_view norm, double eps) {
  return gpu::forward_launch(h, weight, bias, activation, norm, eps);
}

namespace gpu {
std::atomic<bool>& packed_rows_switch() {
  static std::atomic<bool> enabled{[] {
    const char* value = std::getenv("FASTADAPTER_CUDA_PACKED_ROWS");
    return value != nullptr && std::string_view(value) == "1";
  }()};
  return enabled;
}
}  // namespace gpu

void set_cuda_packed_rows(bool enabled) { gpu::packed_rows_switch().store(enabled, std::memory_order_relaxed); }

int cuda_packed_rows_chunks(int64_t r, int64_t element_size, bool backward) {
  return gpu::vector_chunks(r, static_cast<size_t>(element_size), {},
                            backward ? gpu::kMaxBackwardChunks : gpu::kMaxChunks);
}

}  // namespace fastadapter
