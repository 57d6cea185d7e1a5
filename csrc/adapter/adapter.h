// The adapter op's C++ contract: y = x + W_up · act(norm(W_down · x + b_down)) + b_up over the last dimension.
//
// Every backend supplies the whole forward and backward below and registers them in adapter_backends(): the
// native ones here in C++ (cpu/backend.cpp, cuda/backend.cpp), the Python ones (triton, torch) from
// fastadapter/ops/adapter/. The saved-for-backward contract is the same for all, so a forward of one backend
// and a backward of another mix: forward returns (y, h, mean, rstd), where h = W_down · x + b_down (empty when
// recompute) and mean, rstd are float32 norm statistics per row (mean is 0 for RMSNorm); backward takes them.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../common/activation.h"
#include "../common/backend_table.h"

namespace fastadapter {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

using AdapterForwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor>;  // y, h, mean, rstd
// grad_x (empty unless input_grad), grad_w_down, grad_b_down, grad_norm_weight, grad_norm_bias, grad_w_up, grad_b_up
using AdapterBackwardResult = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

using AdapterForward = AdapterForwardResult(const Tensor& x, const Tensor& w_down, const OptTensor& b_down,
                                            const Tensor& norm_weight, const OptTensor& norm_bias, const Tensor& w_up,
                                            const OptTensor& b_up, c10::string_view activation, c10::string_view norm,
                                            double eps, bool recompute);
using AdapterBackward = AdapterBackwardResult(const Tensor& grad_y, const Tensor& x, const Tensor& h,
                                              const Tensor& mean, const Tensor& rstd, const Tensor& w_down,
                                              const OptTensor& b_down, const Tensor& norm_weight,
                                              const OptTensor& norm_bias, const Tensor& w_up,
                                              c10::string_view activation, c10::string_view norm, double eps,
                                              bool recompute, bool input_grad);

struct AdapterImpl {
  std::function<AdapterForward> forward;
  std::function<AdapterBackward> backward;
};

BackendTable<AdapterImpl>& adapter_backends();

// The op's input checks (checks.cpp): dtypes, devices and shapes against x and w_down, the activation and norm
// names and eps. Raises TypeError or ValueError naming the argument; sizes may be symbolic.
void check_adapter_inputs(const Tensor& x, const Tensor& w_down, const OptTensor& b_down, const Tensor& norm_weight,
                          const OptTensor& norm_bias, const Tensor& w_up, const OptTensor& b_up,
                          c10::string_view activation, c10::string_view norm, double eps);

// The GEMMs every native backend shares (gemms.cpp). h = x2 · W_downᵀ + b_down into h.
void down_into(Tensor& h, const Tensor& x2, const Tensor& w_down, const OptTensor& b_down);
// grad_W_up = gyᵀ · a, in the layout CPU BLAS runs fastest for the row count.
Tensor up_weight_grad(const Tensor& gy, const Tensor& a);
// The op's large tensors: on CPU from the caching huge-page allocator; other devices' allocators already cache.
Tensor empty_large(at::IntArrayRef sizes, const Tensor& like);
// The first step of every native forward: x as (rows, D) and h = x · W_downᵀ + b_down, kept for backward unless
// recompute; outputs() gives the forward's results in x's leading shape.
struct DownProjection {
  Tensor x2, h;
  std::vector<int64_t> lead;
  AdapterForwardResult outputs(const Tensor& y, const Tensor& mean, const Tensor& rstd, bool recompute) const;
};
DownProjection down_projection(const Tensor& x, const Tensor& w_down, const OptTensor& b_down);

// The fused norm + activation pass over the bottleneck, as a native backend plugs it into gemms.cpp's
// orchestration: forward (h) -> (a, mean, rstd); backward (grad_a, h, mean, rstd) -> (a, grad_h,
// grad_norm_weight, grad_norm_bias, grad_h summed over rows).
using NormActForward = std::tuple<Tensor, Tensor, Tensor>(const Tensor& h, const Tensor& weight,
                                                          const OptTensor& bias, c10::string_view activation,
                                                          c10::string_view norm, double eps);
using NormActBackward = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
    const Tensor& grad_a, const Tensor& h, const Tensor& mean, const Tensor& rstd, const Tensor& weight,
    const OptTensor& bias, c10::string_view activation, c10::string_view norm);
// The adapter around a device's norm + activation pass: its GEMMs from ATen, the residual and b_up as separate
// passes. The cuda backend is this; the cpu backend folds those passes into its kernels instead.
AdapterForwardResult forward_around(NormActForward* middle, const Tensor& x, const Tensor& w_down,
                                    const OptTensor& b_down, const Tensor& norm_weight, const OptTensor& norm_bias,
                                    const Tensor& w_up, const OptTensor& b_up, c10::string_view activation,
                                    c10::string_view norm, double eps, bool recompute);
AdapterBackwardResult backward_around(NormActBackward* middle, const Tensor& grad_y, const Tensor& x, const Tensor& h,
                                      const Tensor& mean, const Tensor& rstd, const Tensor& w_down,
                                      const OptTensor& b_down, const Tensor& norm_weight, const OptTensor& norm_bias,
                                      const Tensor& w_up, c10::string_view activation, c10::string_view norm,
                                      double eps, bool recompute, bool input_grad);

// Checks of the norm + activation pass's own inputs, shared by its kernels: h is (rows, r) contiguous, the norm
// parameters are (r,) in h's dtype (the CUDA kernels read them as stored).
void check_norm_act_inputs(const Tensor& h, const Tensor& weight, const OptTensor& bias);
void check_norm_act_backward_inputs(const Tensor& grad_a, const Tensor& h, const Tensor& mean, const Tensor& rstd,
                                    const Tensor& weight, const OptTensor& bias);

// The residual's (rows, D) pass, folded into the CPU norm pass's row loop so that this memory-bound copy
// overlaps the compute-bound norm+activation. Forward: dest = source + bias (y starts as x + b_up and the
// up-projection GEMM accumulates into it). Backward: dest = source (grad_x starts as grad_y) and the column sums
// of source (the up-projection bias grad) come back. bias may be undefined.
struct ResidualRows {
  Tensor source;
  Tensor bias;
  Tensor dest;
};

// The CPU kernels (cpu/norm_act.cpp), writing into outputs the caller allocated. grad_h may alias grad_a
// (computed in place); residual may be nullptr. The backward returns the column sums as the grads they are: of
// the norm weight and bias (in the weight's dtype), of grad_h (the down-projection bias grad, in h's dtype) and of
// the residual source (the up-projection bias grad, in its dtype; undefined without residual).
struct NormActBackwardSums {
  Tensor grad_weight, grad_bias, grad_h_sum, residual_sum;
};
void norm_act_forward_cpu_into(const Tensor& h, const Tensor& weight, const OptTensor& bias,
                               c10::string_view activation, c10::string_view norm, double eps, Tensor& a,
                               Tensor& mean, Tensor& rstd, const ResidualRows* residual);
NormActBackwardSums norm_act_backward_cpu_into(const Tensor& grad_a, const Tensor& h, const Tensor& mean,
                                               const Tensor& rstd, const Tensor& weight, const OptTensor& bias,
                                               c10::string_view activation, c10::string_view norm, Tensor& a,
                                               Tensor& grad_h, const ResidualRows* residual);

#ifdef FASTADAPTER_WITH_CUDA
// The CUDA kernels (cuda/norm_act_*.cu).
NormActForward norm_act_forward_cuda;
NormActBackward norm_act_backward_cuda;
// Packs per lane the CUDA row-in-registers kernels would use for 16-byte-aligned rows of r elements of this
// size (0: the general kernels run). For tests: it is the one gate of that choice, env switch included.
int cuda_packed_rows_chunks(int64_t r, int64_t element_size, bool backward);
// The row-in-registers kernels on or off from now on (FASTADAPTER_CUDA_PACKED_ROWS gives the first value).
void set_cuda_packed_rows(bool enabled);
#endif

}  // namespace fastadapter
