// The LM loss op's schemas: the head's linear layer fused with the cross entropy, chunked over tokens so the
// (T, V) logits never exist. Forward returns the loss (reduced, or per token for "none"), the float32 per-token
// log-sum-exp, and, for "mean"/"sum" with grads asked for, the gradients of the reduced loss (backward then only
// scales them; each is empty when not computed). Backward is the per-token path of "none": it recomputes each
// chunk's logits from the saved log-sum-exp.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastadapter, m) {
  m.def("lm_loss_forward(Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, float label_smoothing,"
        " int ignore_index, str reduction, bool hidden_grad, bool weight_grad, bool bias_grad, str backend)"
        " -> (Tensor loss, Tensor lse, Tensor grad_hidden, Tensor grad_weight, Tensor grad_bias)");
  m.def("lm_loss_backward(Tensor grad_loss, Tensor hidden, Tensor weight, Tensor? bias, Tensor labels, Tensor lse,"
        " float label_smoothing, int ignore_index, bool hidden_grad, bool weight_grad, bool bias_grad, str backend)"
        " -> (Tensor grad_hidden, Tensor grad_weight, Tensor grad_bias)");
}
