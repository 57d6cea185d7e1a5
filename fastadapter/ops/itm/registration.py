"""The ITM ops' Python registrations: their backends written in Python (torch here, triton in kernels/itm.py)
added to the ops' C++ tables, and the fake kernels torch.compile traces with."""

from __future__ import annotations

import torch

from ... import _C
from ..common import triton_entry
from . import torch_backend

_C.register_itm_margin_backend("torch", torch_backend.forward, torch_backend.backward)
_C.register_itm_margin_backend("triton", triton_entry("itm", "margin_forward"),
                               triton_entry("itm", "margin_backward"))
_C.register_hard_negatives_backend("torch", torch_backend.sample)
_C.register_hard_negatives_backend("triton", triton_entry("itm", "sample"))


@torch.library.register_fake("fastadapter::itm_margin_forward")
def _margin_forward_fake(image, text, image_ids, text_ids, margin, normalize, backend):
    _C.check_itm_margin_inputs(image, text, image_ids, text_ids, margin)
    return image.new_empty(image.shape[0], dtype=torch.float32)


@torch.library.register_fake("fastadapter::itm_margin_backward")
def _margin_backward_fake(grad_row_loss, image, text, image_ids, text_ids, margin, normalize, image_grad,
                          text_grad, backend):
    return image.new_empty(image.shape if image_grad else 0), text.new_empty(text.shape if text_grad else 0)


@torch.library.register_fake("fastadapter::hard_negatives")
def _negatives_fake(image, text, temperature, image_ids, text_ids, seed, backend):
    _C.check_hard_negatives_inputs(image, text, temperature, image_ids, text_ids)
    return (image.new_empty(image.shape[0], dtype=torch.int64), text.new_empty(text.shape[0], dtype=torch.int64))
