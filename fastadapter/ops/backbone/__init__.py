"""Ops for the frozen BLIP backbone that backward must cross to reach earlier adapters (patch(...,
backbone="lean")): attention with frozen projections, and a frozen (LayerNorm +) MLP. Each saves a fraction of
what eager BLIP saves (no (N, M) probabilities, no q/k/v, nothing of the MLP's width) and recomputes the rest in
backward; both compute only the gradients of their inputs, never of their (frozen) weights.

Where the pieces are: attention.py and mlp.py (the schemas, the math, autograd and fake kernels; Python custom
ops, since their kernels are ATen's fused attention and GEMMs); reference.py (eager: as BLIP computes them).
Tests: tests/test_backbone_ops.py.
"""

from __future__ import annotations

import torch

from ..registry import OpBackends, register
from . import attention as _attention
from . import mlp as _mlp
from . import reference
from .mlp import ACTIVATIONS

ATTENTION_TABLE = register(OpBackends(
    "frozen_attention",
    implemented={"torch": "ATen's fused attention (flash on CPU, memory-efficient on CUDA) around the frozen "
                          "projections, recomputed in backward (attention.py)",
                 "eager": "matmul, softmax, matmul with autograd, as BLIP (reference.py)"},
    auto={"other": ("torch",)}))
MLP_TABLE = register(OpBackends(
    "frozen_mlp",
    implemented={"torch": "GEMMs saving only the input and norm statistics, recomputed blockwise in backward "
                          "(mlp.py)",
                 "eager": "Linear, activation, Linear with autograd, as BLIP (reference.py)"},
    auto={"other": ("torch",)}))


def _autocast_dtype(x) -> torch.dtype | None:
    """The autocast dtype in effect for x's device, if any: the ops then run on their inputs cast to it, as
    F.linear would (LayerNorm included, whose output eager autocast casts for the next GEMM anyway)."""
    if not (isinstance(x, torch.Tensor) and x.is_floating_point()):
        return None
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def _cast(tensors: dict, dtype) -> dict:
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in tensors.items()}


def _check_frozen(op: str, named: dict) -> None:
    if not torch.is_grad_enabled():
        return
    for name, t in named.items():
        if isinstance(t, torch.Tensor) and t.requires_grad:
            raise ValueError(f"fastadapter.{op}: {name} requires grad, but the op's weights are frozen (it computes "
                             "no weight gradients); use the eager module for a trainable block")


def _check_tensors(op: str, reference_tensor, named: dict) -> None:
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"fastadapter.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != reference_tensor.device:
            raise ValueError(f"fastadapter.{op}: {name} is on {t.device}, the input on {reference_tensor.device}")
        if t.dtype != reference_tensor.dtype:
            raise ValueError(f"fastadapter.{op}: {name} is {t.dtype}, the input {reference_tensor.dtype}; "
                             "cast the module (or use torch.autocast)")


def _additive_mask(mask, dtype):
    """A boolean mask (True: attend, as SDPA) or an additive one, as additive in `dtype`, -inf kept finite."""
    if mask is None:
        return None
    low = torch.finfo(dtype).min
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, low)
    return mask.clamp(min=low).to(dtype) if mask.dtype != dtype else mask


def _check_attention_shapes(query_input, key_input, w_q, w_k, w_v, heads, mask):
    op = "frozen_attention"
    if query_input.dim() != 3:
        raise ValueError(f"fastadapter.{op}: query_input must be (B, N, D), got shape {tuple(query_input.shape)}")
    source = query_input if key_input is None else key_input
    if key_input is not None and (key_input.dim() != 3 or key_input.shape[0] != query_input.shape[0]):
        raise ValueError(f"fastadapter.{op}: key_input must be (B, M, D_k) with query_input's batch "
                         f"{query_input.shape[0]}, got shape {tuple(key_input.shape)}")
    if w_q.shape[-1] != query_input.shape[-1] or w_k.shape[-1] != source.shape[-1] or w_v.shape[-1] != source.shape[-1]:
        raise ValueError(f"fastadapter.{op}: projection widths {tuple(w_q.shape)}, {tuple(w_k.shape)}, "
                         f"{tuple(w_v.shape)} do not fit inputs of width {query_input.shape[-1]} / {source.shape[-1]}")
    if not (isinstance(heads, int) and heads > 0 and w_q.shape[0] % heads == 0 and w_q.shape[0] == w_k.shape[0]
            and w_v.shape[0] % heads == 0):
        raise ValueError(f"fastadapter.{op}: heads={heads!r} must be a positive integer dividing the projections' "
                         f"widths (q {w_q.shape[0]}, k {w_k.shape[0]}, v {w_v.shape[0]}), q and k alike")
    if mask is not None:
        full = (query_input.shape[0], heads, query_input.shape[1], source.shape[1])
        try:
            shape = torch.broadcast_shapes(mask.shape, full)
        except RuntimeError:
            shape = None
        if mask.dim() != 4 or shape != full:
            raise ValueError(f"fastadapter.{op}: mask of shape {tuple(mask.shape)} does not broadcast to "
                             f"(B, H, N, M) = {full}")


def frozen_attention(query_input, w_q, b_q, w_k, b_k, w_v, b_v, heads, key_input=None, mask=None, causal=False,
                     scale=None, norm_weight=None, norm_bias=None, layer_norm=False, eps=1e-5, backend="auto"):
    """softmax(q kᵀ·scale + mask) v over `heads` heads, returned as (B, N, H·d) (BLIP's context layer), with q from
    query_input (after LayerNorm when `layer_norm`), k and v from key_input (None: self-attention on the
    normalised query input). mask: additive, or boolean (True attends), broadcastable to (B, H, N, M); causal:
    also mask the future (M − N + 1 above the diagonal). scale defaults to d^-0.5. Only query_input and key_input
    get gradients; the projections and the norm must be frozen."""
    op = "frozen_attention"
    tensors = {"w_q": w_q, "b_q": b_q, "w_k": w_k, "b_k": b_k, "w_v": w_v, "b_v": b_v, "norm_weight": norm_weight,
               "norm_bias": norm_bias}
    _check_frozen(op, tensors)
    inputs = {"query_input": query_input, "key_input": key_input, **tensors}
    autocast = _autocast_dtype(query_input)
    if autocast is not None:
        with torch.autocast(query_input.device.type, enabled=False):
            return frozen_attention(**_cast(inputs, autocast), heads=heads, mask=mask, causal=causal, scale=scale,
                                    layer_norm=layer_norm, eps=eps, backend=backend)
    _check_tensors(op, query_input, inputs)
    _check_attention_shapes(query_input, key_input, w_q, w_k, w_v, heads, mask)
    mask = _additive_mask(mask, query_input.dtype)
    scale = float((w_q.shape[0] // heads) ** -0.5 if scale is None else scale)
    backend = ATTENTION_TABLE.resolve(backend, query_input.device)
    args = (query_input, key_input, w_q, b_q, w_k, b_k, w_v, b_v, norm_weight, norm_bias, bool(layer_norm),
            float(eps), mask, heads, bool(causal), scale)
    if backend == "eager":
        return reference.attention(*args)
    return _attention.attention_forward(*args)[0]


def frozen_mlp(x, w_in, b_in, w_out=None, b_out=None, activation="gelu", norm_weight=None, norm_bias=None,
               layer_norm=False, eps=1e-5, backend="auto"):
    """w_out·act(w_in·x̂ + b_in) + b_out with x̂ = LayerNorm(x) when `layer_norm` (else x); without w_out, the
    activation itself. Only x gets a gradient; the weights must be frozen."""
    op = "frozen_mlp"
    tensors = {"w_in": w_in, "b_in": b_in, "w_out": w_out, "b_out": b_out, "norm_weight": norm_weight,
               "norm_bias": norm_bias}
    _check_frozen(op, tensors)
    autocast = _autocast_dtype(x)
    if autocast is not None:
        with torch.autocast(x.device.type, enabled=False):
            return frozen_mlp(**_cast({"x": x, **tensors}, autocast), activation=activation, layer_norm=layer_norm,
                              eps=eps, backend=backend)
    _check_tensors(op, x, {"x": x, **tensors})
    if activation not in ACTIVATIONS:
        raise ValueError(f"fastadapter.{op}: unknown activation {activation!r}; expected one of {ACTIVATIONS}")
    if w_in.dim() != 2 or w_in.shape[1] != x.shape[-1] or (w_out is not None and w_out.shape[-1] != w_in.shape[0]):
        raise ValueError(f"fastadapter.{op}: weights {tuple(w_in.shape)}"
                         f"{'' if w_out is None else ', ' + str(tuple(w_out.shape))} do not fit an input of width "
                         f"{x.shape[-1]}")
    backend = MLP_TABLE.resolve(backend, x.device)
    args = (x, norm_weight, norm_bias, bool(layer_norm), float(eps), w_in, b_in, w_out, b_out, activation)
    if backend == "eager":
        return reference.mlp(*args)
    return _mlp.mlp_forward(*args)[0]


__all__ = ["frozen_attention", "frozen_mlp", "reference", "ACTIVATIONS", "ATTENTION_TABLE", "MLP_TABLE"]
