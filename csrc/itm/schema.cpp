// The ITM ops' schemas (contracts in itm.h): the margin loss's forward and backward, and the hard-negative
// sampler, for every backend (the `backend` argument picks its row of the op's table).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastadapter, m) {
  m.def("itm_margin_forward(Tensor image, Tensor text, Tensor? image_ids, Tensor? text_ids, float margin,"
        " bool normalize, str backend) -> Tensor row_loss");
  m.def("itm_margin_backward(Tensor grad_row_loss, Tensor image, Tensor text, Tensor? image_ids, Tensor? text_ids,"
        " float margin, bool normalize, bool image_grad, bool text_grad, str backend)"
        " -> (Tensor grad_image, Tensor grad_text)");
  m.def("hard_negatives(Tensor image, Tensor text, Tensor temperature, Tensor? image_ids, Tensor? text_ids,"
        " int seed, str backend) -> (Tensor text_for_image, Tensor image_for_text)");
}
