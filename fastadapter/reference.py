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
    """The fused middle of the adapter, unfused, in float32 as the kernels do: returns (a, mean, rstd)
    with one float32 statistic per row of h (mean is 0 for RMSNorm)."""
    hf = h.float()
    mean = hf.mean(-1) if norm == "layernorm" else hf.new_zeros(hf.shape[:-1])
    rstd = torch.rsqrt((hf - mean[..., None]).pow(2).mean(-1) + eps)
    z = (hf - mean[..., None]) * rstd[..., None] * weight.float() + (bias.float() if bias is not None else 0.0)
    return activate(z, activation).to(h.dtype), mean, rstd


def norm_act_backward(grad_a, h, mean, rstd, weight, bias, activation: str, norm: str):
    """Backward of norm_act_forward from the saved statistics, in float32, written out as the kernels do:
    returns (a, grad_h, grad_weight, grad_bias, grad_h_sum)."""
    xhat = (h.float() - mean[:, None]) * rstd[:, None]
    z = xhat * weight.float() + (bias.float() if bias is not None else 0.0)
    with torch.enable_grad():
        z = z.detach().requires_grad_()
        a = activate(z, activation)
        (grad_z,) = torch.autograd.grad(a, z, grad_a.float())
    grad_xhat = grad_z * weight.float()
    centred = grad_xhat - grad_xhat.mean(-1, keepdim=True) if norm == "layernorm" else grad_xhat
    grad_h = rstd[:, None] * (centred - xhat * (grad_xhat * xhat).mean(-1, keepdim=True))
    return (a.detach().to(h.dtype), grad_h.to(h.dtype), (grad_z * xhat).sum(0).to(weight.dtype),
            grad_z.sum(0).to(weight.dtype), grad_h.sum(0).to(h.dtype))
