"""Eager PyTorch reference of the adapter: the ground truth of every test and the `eager` backend.

y = x + W_up · act(norm(W_down · x + b_down)) + b_up
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")
NORMS = ("layernorm", "rmsnorm")


def activate(z: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "gelu":
        return F.gelu(z)
    if activation == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    if activation == "relu":
        return F.relu(z)
    if activation == "silu":
        return F.silu(z)
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def normalize(h, weight, bias, norm: str, eps: float) -> torch.Tensor:
    if norm == "layernorm":
        return F.layer_norm(h, h.shape[-1:], weight, bias, eps)
    if norm == "rmsnorm":
        out = F.rms_norm(h, h.shape[-1:], weight, eps)
        return out if bias is None else out + bias
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def adapter(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation="gelu", norm="layernorm", eps=1e-5):
    """The adapter in plain PyTorch; autograd gives its gradients."""
    h = F.linear(x, w_down, b_down)
    a = activate(normalize(h, norm_weight, norm_bias, norm, eps), activation)
    return x + F.linear(a, w_up, b_up)


def norm_act_forward(h, weight, bias, activation: str, norm: str, eps: float):
    """The fused middle of the adapter, unfused: returns (a, mean, rstd) as the kernels do."""
    hf = h.float()
    mean = hf.mean(-1) if norm == "layernorm" else hf.new_zeros(hf.shape[:-1])
    var = (hf - mean[..., None]).pow(2).mean(-1)
    rstd = torch.rsqrt(var + eps)
    a = activate(normalize(h, weight, bias, norm, eps), activation)
    return a, mean, rstd


def norm_act_backward(grad_a, h, mean, rstd, weight, bias, activation: str, norm: str, eps: float):
    """Backward of norm_act_forward by autograd: returns (a, grad_h, grad_weight, grad_bias, grad_h_sum)."""
    with torch.enable_grad():
        h = h.detach().requires_grad_()
        weight = weight.detach().requires_grad_()
        bias_in = bias.detach().requires_grad_() if bias is not None else weight.new_zeros(weight.shape, requires_grad=True)
        a = activate(normalize(h, weight, bias_in, norm, eps), activation)
        grad_h, grad_weight, grad_bias = torch.autograd.grad(a, (h, weight, bias_in), grad_a)
    return a.detach(), grad_h, grad_weight, grad_bias, grad_h.sum(0)
