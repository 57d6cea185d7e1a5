// The adapter's cuda backend: cuBLAS GEMMs (ATen) around the CUDA norm + activation kernels (norm_act_*.cu).
#include <ATen/ATen.h>

#include "../adapter.h"

namespace fastadapter {
namespace {

AdapterForwardResult forward_cuda(const Tensor& x, const Tensor& w_down, const OptTensor& b_down,
                                  const Tensor& norm_weight, const OptTensor& norm_bias, const Tensor& w_up,
                                  const OptTensor& b_up, c10::string_view activation, c10::string_view norm,
                                  double eps, bool recompute) {
  return forward_around(&norm_act_forward_cuda, x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation,
                        norm, eps, recompute);
}

AdapterBackwardResult backward_cuda(const Tensor& grad_y, const Tensor& x, const Tensor& h, const Tensor& mean,
                                    const Tensor& rstd, const Tensor& w_down, const OptTensor& b_down,
                                    const Tensor& norm_weight, const OptTensor& norm_bias, const Tensor& w_up,
                                    c10::string_view activation, c10::string_view norm, double eps, bool recompute,
                                    bool input_grad) {
  return backward_around(&norm_act_backward_cuda, grad_y, x, h, mean, rstd, w_down, b_down, norm_weight, norm_bias,
                         w_up, activation, norm, eps, recompute, input_grad);
}

[[maybe_unused]] const bool registered = (adapter_backends().add("cuda", {forward_cuda, backward_cuda}), true);

}  // namespace
}  // namespace fastadapter
