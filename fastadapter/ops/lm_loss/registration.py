"""The LM loss op's Python registrations: the torch and triton backends into the op's C++ table, and the fake
kernels."""

from __future__ import annotations

import torch

from ... import _C
from ..common import triton_entry
from . import torch_backend

_C.register_lm_loss_backend("torch", torch_backend.forward, torch_backend.backward)
_C.register_lm_loss_backend("triton", triton_entry("lm_loss", "forward"), triton_entry("lm_loss", "backward"))


@torch.library.register_fake("fastadapter::lm_loss_forward")
def _forward_fake(hidden, weight, bias, labels, label_smoothing, ignore_index, reduction, hidden_grad, weight_grad,
                  bias_grad, backend):
    _C.check_lm_loss_inputs(hidden, weight, bias, labels, label_smoothing, reduction)
    f32 = dict(dtype=torch.float32)
    precompute = reduction != "none"
    loss = hidden.new_empty(hidden.shape[0] if reduction == "none" else (), **f32)
    return (loss, hidden.new_empty(hidden.shape[0], **f32),
            hidden.new_empty(hidden.shape if precompute and hidden_grad else 0),
            weight.new_empty(weight.shape if precompute and weight_grad else 0),
            weight.new_empty(weight.shape[0] if precompute and bias_grad and bias is not None else 0))


@torch.library.register_fake("fastadapter::lm_loss_backward")
def _backward_fake(grad_loss, hidden, weight, bias, labels, lse, label_smoothing, ignore_index, hidden_grad,
                   weight_grad, bias_grad, backend):
    return (hidden.new_empty(hidden.shape if hidden_grad else 0), weight.new_empty(weight.shape if weight_grad else 0),
            weight.new_empty(weight.shape[0] if bias_grad and bias is not None else 0))
