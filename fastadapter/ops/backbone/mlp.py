"""fastadapter::frozen_mlp_forward / _backward: a feed-forward network with frozen weights, as in every BLIP
block that backward crosses on its way to an earlier adapter.

Forward: y = W_out·act(W_in·x̂ + b_in) + b_out, x̂ = LayerNorm(x) (optional: the vision blocks' layer_norm2,
folded in); without W_out, y = act(W_in·x̂ + b_in) (BLIP's text `intermediate`: its output.dense is the
adapted module, so it stays a module of its own). Saved for backward: x and the norm statistics, nothing of
width F. Backward computes only dx: per block of rows it recomputes x̂ and the pre-activation p = W_in·x̂ + b_in
(one GEMM), then dp = act'(p) ⊙ (dy·W_out), dx̂ = dp·W_in and the LayerNorm backward. Blocks bound the
temporaries of width F; they are large, since smaller ones (sized to a core's cache) made the GEMMs slower on
CPU than the cache saved (benchmarks/results/).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import normalised, renormalised
from .reference import activate

OP = "fastadapter::frozen_mlp"
ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "quick_gelu")
BLOCK_ROWS = 8192  # rows recomputed at a time in backward: at most three (rows, F) temporaries


def activation_backward(grad, p, activation: str, in_place: bool = False):
    """act'(p) ⊙ grad; in_place: over grad (a temporary of the caller's), where the activation allows."""
    if activation in ("gelu", "gelu_tanh"):
        approximate = "none" if activation == "gelu" else "tanh"
        if in_place:
            return torch.ops.aten.gelu_backward.grad_input(grad, p, approximate=approximate, grad_input=grad)
        return torch.ops.aten.gelu_backward(grad, p, approximate=approximate)
    if activation == "relu":
        return grad * (p > 0)
    if activation == "silu":
        return torch.ops.aten.silu_backward(grad, p)
    s = torch.sigmoid(1.702 * p)  # quick_gelu: d/dp p·σ(1.702p) = σ + 1.702·p·σ(1 − σ)
    return grad * (s + 1.702 * p * s * (1 - s))


def _forward(x, norm_weight, norm_bias, layer_norm, eps, w_in, b_in, w_out, b_out, activation):
    x_hat, mean, rstd = normalised(x, norm_weight, norm_bias, layer_norm, eps)
    hidden = activate(F.linear(x_hat, w_in, b_in), activation)
    return (hidden if w_out is None else F.linear(hidden, w_out, b_out)), mean, rstd


@torch.library.custom_op(OP + "_forward", mutates_args=())
def mlp_forward(x: Tensor, norm_weight: Tensor | None, norm_bias: Tensor | None, layer_norm: bool, eps: float,
                w_in: Tensor, b_in: Tensor | None, w_out: Tensor | None, b_out: Tensor | None,
                activation: str) -> tuple[Tensor, Tensor, Tensor]:
    """-> (y, mean, rstd)."""
    return _forward(x, norm_weight, norm_bias, layer_norm, eps, w_in, b_in, w_out, b_out, activation)


mlp_forward.register_fake(_forward)  # the computation on fake tensors: the statistics' dtype as LayerNorm gives it


@torch.library.custom_op(OP + "_backward", mutates_args=())
def mlp_backward(grad_y: Tensor, x: Tensor, norm_weight: Tensor | None, norm_bias: Tensor | None, layer_norm: bool,
                 eps: float, w_in: Tensor, b_in: Tensor | None, w_out: Tensor | None, activation: str, mean: Tensor,
                 rstd: Tensor) -> Tensor:
    """-> dx."""
    rows, grad_rows = x.reshape(-1, x.shape[-1]), grad_y.reshape(-1, grad_y.shape[-1])
    means, rstds = (mean.reshape(-1, 1), rstd.reshape(-1, 1)) if layer_norm else (mean, rstd)

    def block(part):
        x_hat = renormalised(rows[part], norm_weight, norm_bias, layer_norm, eps)
        grad_hidden = grad_rows[part] if w_out is None else grad_rows[part] @ w_out
        grad_p = activation_backward(grad_hidden, F.linear(x_hat, w_in, b_in), activation, in_place=w_out is not None)
        grad_x_hat = grad_p @ w_in
        if not layer_norm:
            return grad_x_hat
        return torch.ops.aten.native_layer_norm_backward(grad_x_hat, rows[part], (x.shape[-1],), means[part],
                                                         rstds[part], norm_weight, norm_bias, [True, False, False])[0]

    if rows.shape[0] <= BLOCK_ROWS:
        return block(slice(None)).view(x.shape)
    grad_x = torch.empty_like(rows)
    for start in range(0, rows.shape[0], BLOCK_ROWS):
        grad_x[start:start + BLOCK_ROWS] = block(slice(start, start + BLOCK_ROWS))
    return grad_x.view(x.shape)


@mlp_backward.register_fake
def _backward_fake(grad_y, x, norm_weight, norm_bias, layer_norm, eps, w_in, b_in, w_out, activation, mean, rstd):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    x, norm_weight, norm_bias, layer_norm, eps, w_in, b_in, w_out, b_out, activation = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, norm_weight, norm_bias, w_in, b_in, w_out, mean, rstd)
    ctx.options = (layer_norm, eps, activation)


def _backward(ctx, grad_y, *_):
    x, norm_weight, norm_bias, w_in, b_in, w_out, mean, rstd = ctx.saved_tensors
    layer_norm, eps, activation = ctx.options
    grad_x = mlp_backward(grad_y.contiguous(), x, norm_weight, norm_bias, layer_norm, eps, w_in, b_in, w_out,
                          activation, mean, rstd)
    return (grad_x, *([None] * 9))


mlp_forward.register_autograd(_backward, setup_context=_setup_context)
