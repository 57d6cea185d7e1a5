"""The adapter in plain PyTorch with autograd: the `eager` backend and the ground truth of every test.

y = x + W_up · act(norm(W_down · x + b_down)) + b_up
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import ACTIVATIONS, activate

__all__ = ["ACTIVATIONS", "NORMS", "activate", "normalize", "adapter"]

NORMS = ("layernorm", "rmsnorm")


def normalize(h, weight, bias, norm: str, eps: float) -> torch.Tensor:
    if norm == "layernorm":
        return F.layer_norm(h, h.shape[-1:], weight, bias, eps)
    if norm == "rmsnorm":
        out = F.rms_norm(h, h.shape[-1:], weight, eps)
        return out if bias is None else out + bias
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def adapter(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation="gelu", norm="layernorm", eps=1e-5):
    """The adapter in plain PyTorch; autograd gives its gradients (to any order) and any dtype works."""
    h = F.linear(x, w_down, b_down)
    a = activate(normalize(h, norm_weight, norm_bias, norm, eps), activation)
    return x + F.linear(a, w_up, b_up)
