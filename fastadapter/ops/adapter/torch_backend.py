"""The adapter op's torch backend: its saved-for-backward contract written in plain PyTorch (no autograd inside).

It is what the fused backends are checked against when forwards and backwards of different backends mix, and
the orchestration a backend reuses when it supplies only the norm + activation middle (triton, today): forward
and backward take that middle as `middle`. The contract (csrc/adapter/adapter.h): forward returns (y, h, mean,
rstd), h = W_down · x + b_down (empty when recompute) and float32 norm statistics per row (mean is 0 for RMSNorm).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import activate, activation_slope


def norm_act_forward(h, weight, bias, activation: str, norm: str, eps: float):
    """a = act(norm(h)) in float32, as the kernels compute it, with one float32 statistic per row of h."""
    hf = h.float()
    mean = hf.mean(-1) if norm == "layernorm" else hf.new_zeros(hf.shape[:-1])
    rstd = torch.rsqrt((hf - mean[..., None]).pow(2).mean(-1) + eps)
    z = (hf - mean[..., None]) * rstd[..., None] * weight.float() + (bias.float() if bias is not None else 0.0)
    return activate(z, activation).to(h.dtype), mean, rstd


def norm_act_backward(grad_a, h, mean, rstd, weight, bias, activation: str, norm: str):
    """Backward of norm_act_forward from the saved statistics, in float32, written out as the kernels do:
    returns (a, grad_h, grad_weight, grad_bias, grad_h summed over rows)."""
    xhat = (h.float() - mean[:, None]) * rstd[:, None]
    z = xhat * weight.float() + (bias.float() if bias is not None else 0.0)
    a = activate(z, activation)
    grad_z = grad_a.float() * activation_slope(z, activation)
    grad_xhat = grad_z * weight.float()
    centred = grad_xhat - grad_xhat.mean(-1, keepdim=True) if norm == "layernorm" else grad_xhat
    grad_h = rstd[:, None] * (centred - xhat * (grad_xhat * xhat).mean(-1, keepdim=True))
    return (a.to(h.dtype), grad_h.to(h.dtype), (grad_z * xhat).sum(0).to(weight.dtype),
            grad_z.sum(0).to(weight.dtype), grad_h.sum(0).to(h.dtype))


def forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps, recompute,
            middle=norm_act_forward):
    x2 = x.reshape(-1, x.shape[-1])
    h = F.linear(x2, w_down, b_down)
    a, mean, rstd = middle(h, norm_weight, norm_bias, activation, norm, eps)
    y = torch.addmm(x2 if b_up is None else x2 + b_up, a, w_up.t())  # the residual rides in the last GEMM
    lead = x.shape[:-1]
    return (y.view(x.shape), x.new_empty(0) if recompute else h.view(*lead, h.shape[-1]), mean.view(lead),
            rstd.view(lead))


def backward(grad_y, x, h, mean, rstd, w_down, b_down, norm_weight, norm_bias, w_up, activation, norm, eps,
             recompute, input_grad, middle=norm_act_backward):
    width, r = x.shape[-1], w_down.shape[0]
    gy, x2 = grad_y.reshape(-1, width), x.reshape(-1, width)
    h2 = F.linear(x2, w_down, b_down) if recompute else h.reshape(-1, r)
    a, grad_h, grad_norm_weight, grad_norm_bias, grad_b_down = middle(
        gy @ w_up, h2, mean.reshape(-1), rstd.reshape(-1), norm_weight, norm_bias, activation, norm)
    grad_x = torch.addmm(gy, grad_h, w_down).view(x.shape) if input_grad else x.new_empty(0)
    return grad_x, grad_h.t() @ x2, grad_b_down, grad_norm_weight, grad_norm_bias, gy.t() @ a, gy.sum(0)
