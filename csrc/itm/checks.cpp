// The ITM ops' input checks, run by the ops and by their fake kernels under torch.compile. Values (the
// temperature, whether a row has a negative) are checked in Python (fastadapter/ops/itm/__init__.py).
#include <ATen/ATen.h>

#include "../common/feature_checks.h"
#include "itm.h"

namespace fastadapter {
namespace {

void check_pair_and_ids(const char* op, const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                        const OptTensor& text_ids) {
  check_feature_pair(op, image, "image_feat", text, "text_feat");
  TORCH_CHECK_VALUE(image_ids.has_value() == text_ids.has_value(), op, "give both image_ids and text_ids, or "
                    "neither (then the positives are the diagonal)");
  if (image_ids) {
    check_row_ids(op, "image_ids", *image_ids, image, "image_feat");
    check_row_ids(op, "text_ids", *text_ids, text, "text_feat");
  } else {
    TORCH_CHECK_VALUE(image.sym_size(0) == text.sym_size(0), op, "without ids the positives are the diagonal, so "
                      "image_feat and text_feat need the same count; got ", image.sym_size(0), " images and ",
                      text.sym_size(0), " texts (pass image_ids and text_ids)");
  }
}

}  // namespace

void check_itm_margin_inputs(const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                             const OptTensor& text_ids, double margin) {
  constexpr const char* op = "fastadapter.itm_margin_loss: ";
  check_pair_and_ids(op, image, text, image_ids, text_ids);
  TORCH_CHECK_VALUE(margin >= 0 && std::isfinite(margin), op, "margin must be a finite number >= 0, got ", margin);
}

void check_itm_margin_backward_inputs(const Tensor& grad_row_loss, const Tensor& image) {
  TORCH_CHECK_VALUE(grad_row_loss.dim() == 1 && grad_row_loss.sym_size(0) == image.sym_size(0),
                    "fastadapter.itm_margin_loss: grad_row_loss must have one entry per image (", image.sym_size(0),
                    "), got shape ", shape_str(grad_row_loss.sym_sizes()));
}

void check_hard_negatives_inputs(const Tensor& image, const Tensor& text, const Tensor& temperature,
                                 const OptTensor& image_ids, const OptTensor& text_ids) {
  constexpr const char* op = "fastadapter.sample_hard_negatives: ";
  check_pair_and_ids(op, image, text, image_ids, text_ids);
  check_temperature_tensor(op, temperature, image, "image_feat");
}

}  // namespace fastadapter
