// The ITM ops' C++ contracts (schema.cpp), both over the pairwise similarities s_ij = <a_i, b_j> of images a and
// texts b (on L2-normalised features for the margin loss when normalize), tiled: no N x N tensor on any backend.
// Positives y_ij are equal ids, or the diagonal without ids.
//
// itm_margin: row_loss_i = sum_j y_ij (1 - s_ij) + (1 - y_ij) max(0, s_ij - margin), float32 per image. Backward
//   recomputes the tiles from the inputs (nothing else is saved): d row_loss_i / d s_ij = -y_ij, or
//   [s_ij > margin] for a negative.
// hard_negatives: for each image the index of a text, for each text the index of an image, drawn with probability
//   proportional to exp(s_ij / tau) over the non-positive pairs by Gumbel-max (argmax of s_ij / tau + G_ij, G
//   Gumbel noise from a counter-based generator keyed by seed, row, column and direction); -1 where a row has no
//   negative. One seed gives the same indices on one backend whatever the thread schedule.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <optional>
#include <tuple>

#include "../common/backend_table.h"

namespace fastadapter {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

using MarginForward = Tensor(const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                             const OptTensor& text_ids, double margin, bool normalize);
using MarginBackwardResult = std::tuple<Tensor, Tensor>;  // grad image, grad text (empty when not asked for)
using MarginBackward = MarginBackwardResult(const Tensor& grad_row_loss, const Tensor& image, const Tensor& text,
                                            const OptTensor& image_ids, const OptTensor& text_ids, double margin,
                                            bool normalize, bool image_grad, bool text_grad);

struct MarginImpl {
  std::function<MarginForward> forward;
  std::function<MarginBackward> backward;
};

using NegativesResult = std::tuple<Tensor, Tensor>;  // int64 text index per image, image index per text
using Negatives = NegativesResult(const Tensor& image, const Tensor& text, const Tensor& temperature,
                                  const OptTensor& image_ids, const OptTensor& text_ids, int64_t seed);

struct NegativesImpl {
  std::function<Negatives> sample;
};

BackendTable<MarginImpl>& itm_margin_backends();
BackendTable<NegativesImpl>& hard_negatives_backends();

// Input checks (checks.cpp): dtypes, devices, shapes, the margin; values are not read (a GPU sync).
void check_itm_margin_inputs(const Tensor& image, const Tensor& text, const OptTensor& image_ids,
                             const OptTensor& text_ids, double margin);
void check_itm_margin_backward_inputs(const Tensor& grad_row_loss, const Tensor& image);
void check_hard_negatives_inputs(const Tensor& image, const Tensor& text, const Tensor& temperature,
                                 const OptTensor& image_ids, const OptTensor& text_ids);

}  // namespace fastadapter
