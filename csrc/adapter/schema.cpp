// The adapter op's schemas: one forward, one backward, for every backend (the `backend` argument picks its row
// of adapter_backends()). Forward returns what backward needs besides its inputs: h (empty when recompute) and
// the float32 norm statistics, the saved-for-backward contract of every backend.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastadapter, m) {
  m.def("adapter_forward(Tensor x, Tensor w_down, Tensor? b_down, Tensor norm_weight, Tensor? norm_bias,"
        " Tensor w_up, Tensor? b_up, str activation, str norm, float eps, bool recompute, str backend)"
        " -> (Tensor y, Tensor h, Tensor mean, Tensor rstd)");
  // grad_x is an empty tensor when input_grad is false.
  m.def("adapter_backward(Tensor grad_y, Tensor x, Tensor h, Tensor mean, Tensor rstd, Tensor w_down,"
        " Tensor? b_down, Tensor norm_weight, Tensor? norm_bias, Tensor w_up, str activation, str norm,"
        " float eps, bool recompute, bool input_grad, str backend) -> (Tensor grad_x, Tensor grad_w_down,"
        " Tensor grad_b_down, Tensor grad_norm_weight, Tensor grad_norm_bias, Tensor grad_w_up,"
        " Tensor grad_b_up)");
}
