"""The contrastive op's Python registrations: its backends written in Python (torch here, triton in kernels/),
added to the op's C++ table of implementations, and the fake kernels torch.compile traces with."""

from __future__ import annotations

import torch

from ... import _C
from ..common import triton_entry
from . import torch_backend

_C.register_contrastive_backend("torch", torch_backend.forward, torch_backend.backward)
_C.register_contrastive_backend("triton", triton_entry("contrastive", "forward"),
                                triton_entry("contrastive", "backward"))


@torch.library.register_fake("fastadapter::contrastive_forward")
def _forward_fake(query, keys, temperature, query_ids, key_ids, soft_query, soft_keys, alpha, normalize, rows,
                  columns, backend):
    _C.check_contrastive_inputs(query, keys, temperature, query_ids, key_ids, soft_query, soft_keys, alpha, rows,
                                columns)
    n_rows = query.shape[0] if rows else 0
    n_columns = keys.shape[0] if columns else 0
    f32 = dict(dtype=torch.float32)
    return (query.new_empty(n_rows, **f32), query.new_empty(n_columns, **f32), query.new_empty((3, n_rows), **f32),
            query.new_empty((3, n_columns), **f32))


@torch.library.register_fake("fastadapter::contrastive_backward")
def _backward_fake(grad_row_loss, grad_column_loss, query, keys, temperature, query_ids, key_ids, soft_query,
                   soft_keys, alpha, normalize, row_stats, column_stats, query_grad, keys_grad, temperature_grad,
                   backend):
    _C.check_contrastive_backward_inputs(grad_row_loss, grad_column_loss, query, keys, row_stats, column_stats)
    return (query.new_empty(query.shape if query_grad else 0), keys.new_empty(keys.shape if keys_grad else 0),
            temperature.new_empty(() if temperature_grad else 0))
