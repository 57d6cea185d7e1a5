"""fastadapter::frozen_attention_forward / _backward: attention whose q, k, v projections are frozen, as in every
BLIP block that backward crosses on its way to an earlier adapter.

Forward: x̂ = LayerNorm(x) (optional: the vision blocks' layer_norm1, folded in), q = x̂·W_qᵀ + b_q, k and v from
the key input (x̂ for self-attention), then fused attention: O = softmax(q kᵀ·scale + mask) v, with its per-row
log-sum-exp L. Saved for backward: x, the key input (the image embeddings, which the model keeps anyway), O, L
and the norm statistics; no (N, M) tensor and no q/k/v. Backward recomputes x̂, q, k, v (three GEMMs) and runs
the fused attention backward from O and L, then dx̂ = dq·W_q (+ dk·W_k + dv·W_v for self-attention) and the
LayerNorm backward. The projections and the norm are frozen: no gradient reaches them.

Fused attention is ATen's: flash attention on CPU (_scaled_dot_product_flash_attention_for_cpu), memory-efficient
attention on CUDA (_scaled_dot_product_efficient_attention, which takes an additive mask). L is kept as the
device's kernel returns it (float32, (B, H, N) on CPU; the CUDA kernel pads N), since only that kernel reads it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

OP = "fastadapter::frozen_attention"
_MEM_EFFICIENT_ALIGNMENT = 16  # the CUDA kernel reads the mask's rows in aligned vectors


def normalised(x, norm_weight, norm_bias, layer_norm: bool, eps: float):
    """(x̂, mean, rstd); without the norm, x itself and empty statistics."""
    if not layer_norm:
        return x, x.new_empty(0, dtype=torch.float32), x.new_empty(0, dtype=torch.float32)
    return torch.native_layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps)


def renormalised(x, norm_weight, norm_bias, layer_norm: bool, eps: float):
    """x̂ again in backward: one fused pass over x, bit for bit the forward's x̂ (the statistics of a row do not
    depend on the others)."""
    if not layer_norm:
        return x
    return torch.native_layer_norm(x, (x.shape[-1],), norm_weight, norm_bias, eps)[0]


def _heads(t, weight, bias, heads: int):
    """(B, N, D) -> (B, H, N, d), a view of the projection."""
    return F.linear(t, weight, bias).unflatten(-1, (heads, -1)).transpose(1, 2)


def _cuda_mask(mask, q, k):
    """The additive mask as the memory-efficient kernel reads it: rows padded to an aligned length (then sliced
    back), broadcast to (B, H, N, M) without a copy."""
    m = k.shape[-2]
    if mask.stride(-1) != 1 or m % _MEM_EFFICIENT_ALIGNMENT:
        padded = F.pad(mask, (0, -m % _MEM_EFFICIENT_ALIGNMENT))
        mask = padded[..., :m]
    return mask.expand(q.shape[0], q.shape[1], q.shape[2], m)


def attend(q, k, v, mask, causal: bool, scale: float):
    """(O, L) by the device's fused kernel."""
    if q.device.type == "cuda":
        bias = None if mask is None else _cuda_mask(mask, q, k)
        out, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, 0.0, causal,
                                                                               scale=scale)
        return out, lse
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal, attn_mask=mask,
                                                                      scale=scale)


def attend_backward(grad_out, q, k, v, out, lse, mask, causal: bool, scale: float):
    """(dq, dk, dv) by the device's fused kernel, from O and L."""
    if q.device.type == "cuda":
        bias = None if mask is None else _cuda_mask(mask, q, k)
        seed = offset = torch.empty(0, dtype=torch.int64, device=q.device)  # no dropout: never read
        grads = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            grad_out, q, k, v, bias if bias is not None else q.new_empty(0), out, lse, seed, offset, 0.0,
            [True, True, True, False], causal, scale=scale)
        return grads[:3]
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad_out, q, k, v, out, lse, 0.0, causal, attn_mask=mask, scale=scale)


def _forward(query_input, key_input, w_q, b_q, w_k, b_k, w_v, b_v, norm_weight, norm_bias, layer_norm, eps, mask,
             heads, causal, scale):
    x_hat, mean, rstd = normalised(query_input, norm_weight, norm_bias, layer_norm, eps)
    source = x_hat if key_input is None else key_input
    out, lse = attend(_heads(x_hat, w_q, b_q, heads), _heads(source, w_k, b_k, heads),
                      _heads(source, w_v, b_v, heads), mask, causal, scale)
    return out.transpose(1, 2).flatten(-2).contiguous(), lse, mean, rstd


@torch.library.custom_op(OP + "_forward", mutates_args=())
def attention_forward(query_input: Tensor, key_input: Tensor | None, w_q: Tensor, b_q: Tensor | None, w_k: Tensor,
                      b_k: Tensor | None, w_v: Tensor, b_v: Tensor | None, norm_weight: Tensor | None,
                      norm_bias: Tensor | None, layer_norm: bool, eps: float, mask: Tensor | None, heads: int,
                      causal: bool, scale: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """-> (context (B, N, H·d), lse, mean, rstd)."""
    return _forward(query_input, key_input, w_q, b_q, w_k, b_k, w_v, b_v, norm_weight, norm_bias, layer_norm, eps,
                    mask, heads, causal, scale)


# The fake kernel is the computation itself on fake tensors: ATen's kernels have meta functions, so the shapes
# (the CUDA lse's padding included) come from the same code.
attention_forward.register_fake(_forward)


def _flat(t):
    """(B, H, N, d) -> (B, N, H·d)."""
    return t.transpose(1, 2).flatten(-2)


@torch.library.custom_op(OP + "_backward", mutates_args=())
def attention_backward(grad_context: Tensor, query_input: Tensor, key_input: Tensor | None, w_q: Tensor,
                       b_q: Tensor | None, w_k: Tensor, b_k: Tensor | None, w_v: Tensor, b_v: Tensor | None,
                       norm_weight: Tensor | None, norm_bias: Tensor | None, layer_norm: bool, eps: float,
                       mask: Tensor | None, heads: int, causal: bool, scale: float, context: Tensor, lse: Tensor,
                       mean: Tensor, rstd: Tensor, query_grad: bool, key_grad: bool) -> tuple[Tensor, Tensor]:
    """-> (grad of query_input, grad of key_input); each empty when not asked for (key: also for self-attention,
    whose keys come from the query input)."""
    x_hat = renormalised(query_input, norm_weight, norm_bias, layer_norm, eps)
    source = x_hat if key_input is None else key_input
    q, k, v = _heads(x_hat, w_q, b_q, heads), _heads(source, w_k, b_k, heads), _heads(source, w_v, b_v, heads)
    unflat = (grad_context.shape[0], grad_context.shape[1], heads, -1)
    dq, dk, dv = attend_backward(grad_context.view(unflat).transpose(1, 2), q, k, v,
                                 context.view(unflat).transpose(1, 2), lse, mask, causal, scale)
    grad_query = grad_key = query_input.new_empty(0)
    grad_source = None
    if key_input is None or key_grad:
        grad_source = torch.matmul(_flat(dk), w_k)
        grad_source += torch.matmul(_flat(dv), w_v)
    if query_grad:
        grad_x_hat = torch.matmul(_flat(dq), w_q)
        if key_input is None:
            grad_x_hat += grad_source
        grad_query = grad_x_hat if not layer_norm else torch.ops.aten.native_layer_norm_backward(
            grad_x_hat, query_input, (query_input.shape[-1],), mean, rstd, norm_weight, norm_bias,
            [True, False, False])[0]
    if key_input is not None and key_grad:
        grad_key = grad_source
    return grad_query, grad_key


@attention_backward.register_fake
def _backward_fake(grad_context, query_input, key_input, w_q, b_q, w_k, b_k, w_v, b_v, norm_weight, norm_bias,
                   layer_norm, eps, mask, heads, causal, scale, context, lse, mean, rstd, query_grad, key_grad):
    key_shape = key_input.shape if key_input is not None and key_grad else (0,)
    return query_input.new_empty(query_input.shape if query_grad else (0,)), query_input.new_empty(key_shape)


def _setup_context(ctx, inputs, output):
    (query_input, key_input, w_q, b_q, w_k, b_k, w_v, b_v, norm_weight, norm_bias, layer_norm, eps, mask, heads,
     causal, scale) = inputs
    context, lse, mean, rstd = output
    ctx.save_for_backward(query_input, key_input, w_q, b_q, w_k, b_k, w_v, b_v, norm_weight, norm_bias, mask,
                          context, lse, mean, rstd)
    ctx.options = (layer_norm, eps, heads, causal, scale)


def _backward(ctx, grad_context, *_):
    (query_input, key_input, w_q, b_q, w_k, b_k, w_v, b_v, norm_weight, norm_bias, mask, context, lse, mean,
     rstd) = ctx.saved_tensors
    layer_norm, eps, heads, causal, scale = ctx.options
    query_grad, key_grad = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_query, grad_key = attention_backward(
        grad_context.contiguous(), query_input, key_input, w_q, b_q, w_k, b_k, w_v, b_v, norm_weight, norm_bias,
        layer_norm, eps, mask, heads, causal, scale, context, lse, mean, rstd, query_grad, key_grad)
    return (grad_query if query_grad else None, grad_key if key_grad else None, *([None] * 14))


attention_forward.register_autograd(_backward, setup_context=_setup_context)
