"""The frozen backbone ops as Hugging Face BLIP computes them, in plain PyTorch with autograd: the `eager` backend
and the float64 ground truth of the tests. Attention materialises the (N, M) probabilities; the MLP keeps its
pre-activation for backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import activate as _activate


def activate(p, activation: str):
    """The adapter's activations, and CLIP's quick_gelu, which BLIP configs may name."""
    return p * torch.sigmoid(1.702 * p) if activation == "quick_gelu" else _activate(p, activation)


def _layer_norm(x, weight, bias, layer_norm, eps):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps) if layer_norm else x


def attention(query_input, key_input, w_q, b_q, w_k, b_k, w_v, b_v, norm_weight, norm_bias, layer_norm, eps, mask,
              heads, causal, scale):
    """softmax(q kᵀ · scale + mask) v over `heads` heads, q from (LayerNorm of) query_input, k and v from key_input
    (None: self-attention on the normalised query input); (B, N, H·d) out, as BLIP's attention modules return it."""
    x = _layer_norm(query_input, norm_weight, norm_bias, layer_norm, eps)
    source = x if key_input is None else key_input

    def heads_of(t, weight, bias):
        return F.linear(t, weight, bias).unflatten(-1, (heads, -1)).transpose(1, 2)

    q, k, v = heads_of(x, w_q, b_q), heads_of(source, w_k, b_k), heads_of(source, w_v, b_v)
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    if mask is not None:
        scores = scores + mask
    if causal:
        n, m = scores.shape[-2:]
        future = torch.ones(n, m, dtype=torch.bool, device=scores.device).triu(m - n + 1)
        scores = scores.masked_fill(future, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.matmul(probs, v).transpose(1, 2).flatten(-2)


def mlp(x, norm_weight, norm_bias, layer_norm, eps, w_in, b_in, w_out, b_out, activation):
    """w_out · act(w_in · LayerNorm(x) + b_in) + b_out; without w_out, the activation itself (BLIP's text
    `intermediate`, whose output.dense is a separate, adapted module)."""
    hidden = activate(F.linear(_layer_norm(x, norm_weight, norm_bias, layer_norm, eps), w_in, b_in), activation)
    return hidden if w_out is None else F.linear(hidden, w_out, b_out)
