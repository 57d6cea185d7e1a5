// The contrastive op's schemas: one forward, one backward, for every backend (the `backend` argument picks its row
// of contrastive_backends()). The op is the cross entropy of each row of S = <q_hat, k_hat> / tau against its
// targets (rows: query -> keys) and of each column (columns: key -> queries), tiled: no N x N tensor exists.
// Forward returns the per-row and per-column losses and what backward needs besides its inputs: float32
// statistics (3, n) per direction: the log-sum-exp, the soft targets' log-sum-exp (0 without them) and the
// positive count. A direction not asked for has 0-length losses and statistics.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fastadapter, m) {
  m.def("contrastive_forward(Tensor query, Tensor keys, Tensor temperature, Tensor? query_ids, Tensor? key_ids,"
        " Tensor? soft_query, Tensor? soft_keys, float alpha, bool normalize, bool rows, bool columns, str backend)"
        " -> (Tensor row_loss, Tensor column_loss, Tensor row_stats, Tensor column_stats)");
  // A grad that is None counts as zero; a grad not asked for comes back as an empty tensor.
  m.def("contrastive_backward(Tensor? grad_row_loss, Tensor? grad_column_loss, Tensor query, Tensor keys,"
        " Tensor temperature, Tensor? query_ids, Tensor? key_ids, Tensor? soft_query, Tensor? soft_keys, float alpha,"
        " bool normalize, Tensor row_stats, Tensor column_stats, bool query_grad, bool keys_grad,"
        " bool temperature_grad, str backend) -> (Tensor grad_query, Tensor grad_keys, Tensor grad_temperature)");
}
