// cuBLASLt GEMMs with epilogues (lt_gemm.h). cuBLASLt is column-major: a row-major (rows, cols) tensor is its
// transpose there, so each call below computes the transpose of what lt_gemm.h states, D = op(A)·op(B) with
// m, n, k of the transposed problem. The descriptors and the heuristic's algorithm are made once per shape,
// dtype, epilogue and pointer alignment and kept (a call then only sets its pointers): no per-call heuristic,
// and nothing that depends on values, so the calls can be captured in a CUDA graph.
#include "lt_gemm.h"

#include <ATen/cuda/CUDAContext.h>
#include <cublasLt.h>

#include <atomic>
#include <algorithm>
#include <map>
#include <memory>
#include <mutex>
#include <tuple>

namespace fastadapter {
namespace lt {
namespace {

std::atomic<int64_t> lt_calls{0}, fallback_calls{0};
std::mutex fallback_mutex;
std::string last_fallback;

bool fall_back(const std::string& why) {
  fallback_calls.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(fallback_mutex);
  last_fallback = why;
  return false;
}

cudaDataType_t data_type(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return CUDA_R_32F;
    case at::kBFloat16: return CUDA_R_16BF;
    case at::kHalf: return CUDA_R_16F;
    default: return CUDA_R_32F;
  }
}

// The largest power of two (up to 256) dividing the address: cuBLASLt's heuristic assumes 256 unless told.
uint32_t alignment(const void* p) {
  uint32_t a = 256;
  while (a > 1 && reinterpret_cast<uintptr_t>(p) % a != 0) a /= 2;
  return a;
}

struct Problem {
  int64_t m, n, k, lda, ldb, ldc;
  cublasOperation_t op_a, op_b;
  at::ScalarType dtype;
  cublasLtEpilogue_t epilogue;
  bool has_c;
  uint32_t align_a, align_b, align_c, align_bias;
  int device;
  auto key() const {
    return std::make_tuple(m, n, k, lda, ldb, ldc, op_a, op_b, dtype, epilogue, has_c, align_a, align_b, align_c,
                           align_bias, device);
  }
  bool operator<(const Problem& o) const { return key() < o.key(); }
};

// A problem's descriptors and algorithm, made once.
struct Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulHeuristicResult_t heuristic{};
  bool ok = false;
  std::string why;
  std::mutex use;  // the bias pointer is set on the shared descriptor, then read by the call
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

#define FA_LT(call)                                                         \
  do {                                                                      \
    if ((call) != CUBLAS_STATUS_SUCCESS) {                                  \
      plan->why = std::string(#call) + " failed";                           \
      return plan;                                                          \
    }                                                                       \
  } while (0)

std::shared_ptr<Plan> make_plan(const Problem& p) {
  auto plan = std::make_shared<Plan>();
  const cudaDataType_t t = data_type(p.dtype);
  FA_LT(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));  // float32 accumulation, no TF32
  FA_LT(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &p.op_a, sizeof(p.op_a)));
  FA_LT(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &p.op_b, sizeof(p.op_b)));
  FA_LT(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &p.epilogue, sizeof(p.epilogue)));
  if (p.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    FA_LT(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof(t)));
  }
  // Stored (pre-op) shapes, column-major.
  const bool ta = p.op_a == CUBLAS_OP_T, tb = p.op_b == CUBLAS_OP_T;
  FA_LT(cublasLtMatrixLayoutCreate(&plan->a, t, ta ? p.k : p.m, ta ? p.m : p.k, p.lda));
  FA_LT(cublasLtMatrixLayoutCreate(&plan->b, t, tb ? p.n : p.k, tb ? p.k : p.n, p.ldb));
  FA_LT(cublasLtMatrixLayoutCreate(&plan->c, t, p.m, p.n, p.ldc));
  cublasLtMatmulPreference_t preference = nullptr;
  FA_LT(cublasLtMatmulPreferenceCreate(&preference));
  const uint64_t workspace = at::cuda::getCUDABlasLtWorkspaceSize();
  const uint32_t aligns[4] = {p.align_a, p.align_b, p.align_c, p.align_c};
  const cublasLtMatmulPreferenceAttributes_t names[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  bool set = cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                  sizeof(workspace)) == CUBLAS_STATUS_SUCCESS;
  for (int i = 0; i < 4; ++i) {
    set = set && cublasLtMatmulPreferenceSetAttribute(preference, names[i], &aligns[i], sizeof(aligns[i])) ==
                     CUBLAS_STATUS_SUCCESS;
  }
  int found = 0;
  const auto status = set ? cublasLtMatmulAlgoGetHeuristic(at::cuda::getCurrentCUDABlasLtHandle(), plan->desc,
                                                           plan->a, plan->b, plan->c, plan->c, preference, 1,
                                                           &plan->heuristic, &found)
                          : CUBLAS_STATUS_INVALID_VALUE;
  cublasLtMatmulPreferenceDestroy(preference);
  if (status != CUBLAS_STATUS_SUCCESS || found == 0) {
    plan->why = "cuBLASLt has no algorithm for this GEMM and epilogue";
    return plan;
  }
  plan->ok = true;
  return plan;
}

std::shared_ptr<Plan> plan_for(const Problem& p) {
  static std::mutex mutex;
  static std::map<Problem, std::shared_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto& plan = plans[p];
  if (!plan) plan = make_plan(p);
  return plan;
}

// D = op(A) op(B) (+ C) with the problem's epilogue; bias: the epilogue's bias (BIAS) or its output (BGRADB).
bool run(Problem p, const void* a, const void* b, const void* c, void* d, void* bias) {
  p.align_a = alignment(a);
  p.align_b = alignment(b);
  p.align_c = std::min(alignment(d), c ? alignment(c) : 256u);
  p.align_bias = bias ? alignment(bias) : 256u;
  p.device = at::cuda::current_device();
  const auto plan = plan_for(p);
  if (!plan->ok) return fall_back(plan->why);
  std::lock_guard<std::mutex> lock(plan->use);
  if (bias && cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)) !=
                  CUBLAS_STATUS_SUCCESS) {
    return fall_back("setting the epilogue's bias pointer failed");
  }
  const float alpha = 1.f, beta = c ? 1.f : 0.f;
  const auto status = cublasLtMatmul(at::cuda::getCurrentCUDABlasLtHandle(), plan->desc, &alpha, a, plan->a, b,
                                     plan->b, &beta, c ? c : d, plan->c, d, plan->c, &plan->heuristic.algo,
                                     at::cuda::getCUDABlasLtWorkspace(), at::cuda::getCUDABlasLtWorkspaceSize(),
                                     at::cuda::getCurrentCUDAStream());
  if (status != CUBLAS_STATUS_SUCCESS) return fall_back("cublasLtMatmul failed");
  lt_calls.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool usable(std::initializer_list<const at::Tensor*> tensors) {
  for (const at::Tensor* t : tensors) {
    if (t->defined() && (!t->is_cuda() || !t->is_contiguous())) return false;
  }
  return true;
}

}  // namespace

bool linear(at::Tensor& out, const at::Tensor& input, const at::Tensor& weight, bool weight_kn, const at::Tensor& bias,
            const at::Tensor& residual) {
  if (!usable({&out, &input, &weight, &bias, &residual})) return fall_back("a tensor is not contiguous CUDA");
  const int64_t m_rows = input.size(0), k = input.size(1), n = weight_kn ? weight.size(1) : weight.size(0);
  if (m_rows == 0 || k == 0) return fall_back("an empty GEMM");
  // outᵀ (n, m_rows) = op(A) (n, k) · inputᵀ (k, m_rows): A is the weight, B the input.
  Problem p{n, m_rows, k, weight_kn ? n : k, k, n, weight_kn ? CUBLAS_OP_N : CUBLAS_OP_T, CUBLAS_OP_N,
            input.scalar_type(), bias.defined() ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT,
            residual.defined()};
  return run(p, weight.data_ptr(), input.data_ptr(), residual.defined() ? residual.data_ptr() : nullptr,
             out.data_ptr(), bias.defined() ? bias.data_ptr() : nullptr);
}

bool weight_grad(at::Tensor& out, const at::Tensor& left, const at::Tensor& right, at::Tensor& bias_grad) {
  if (!usable({&out, &left, &right, &bias_grad})) return fall_back("a tensor is not contiguous CUDA");
  const int64_t t = left.size(0), p_rows = left.size(1), q = right.size(1);
  if (t == 0) return fall_back("an empty GEMM");
  // outᵀ (q, p) = rightᵀ (q, t) · left (t, p); BGRADB: Σ over k (= t) of op(B) = left, length p.
  Problem p{q, p_rows, t, q, p_rows, q, CUBLAS_OP_N, CUBLAS_OP_T, left.scalar_type(),
            bias_grad.defined() ? CUBLASLT_EPILOGUE_BGRADB : CUBLASLT_EPILOGUE_DEFAULT, false};
  return run(p, right.data_ptr(), left.data_ptr(), nullptr, out.data_ptr(),
             bias_grad.defined() ? bias_grad.data_ptr() : nullptr);
}

PathCounts path_counts() {
  std::lock_guard<std::mutex> lock(fallback_mutex);
  return {lt_calls.load(), fallback_calls.load(), last_fallback};
}

}  // namespace lt
}  // namespace fastadapter
