// The adapter's GEMMs on CUDA through cuBLASLt, with what its epilogues fold in: a bias added to every row of
// the output, a residual added as C (beta = 1), and a bias gradient (the column sums of a GEMM's operand)
// produced with a weight gradient. Every tensor is row-major and contiguous; each function returns false when
// cuBLASLt offers no algorithm for the call (the caller then takes its ATen path) and counts which path ran.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>

namespace fastadapter {
namespace lt {

// out (M, N) = input (M, K) · Bᵀ + bias (N) + residual (M, N), where B is `weight` (N, K) (a Linear's weight),
// or, with weight_kn, (K, N). bias and residual may be undefined.
bool linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight, bool weight_kn, const at::Tensor& bias,
            const at::Tensor& residual);

// out (P, Q) = leftᵀ (P, T) · right (T, Q), and, where bias_grad is defined, bias_grad (P) = Σ_t left[t, :].
bool weight_grad(at::Tensor& out, const at::Tensor& left, const at::Tensor& right, at::Tensor& bias_grad);

// How many GEMMs ran through cuBLASLt and how many fell back since the process started, and why the last one did.
struct PathCounts {
  int64_t lt = 0;
  int64_t fallback = 0;
  std::string last_fallback;
};
PathCounts path_counts();

}  // namespace lt
}  // namespace fastadapter
