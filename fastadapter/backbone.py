"""patch(model, backbone="lean"): the frozen BLIP blocks that backward crosses, run through ops that save a
fraction of what eager BLIP saves (fastadapter/ops/backbone).

What changes, per block (submodules only: BlipEncoderLayer.forward and BlipTextLayer.forward stay Hugging Face's,
so its gradient checkpointing and the adapters' forward hooks work as before):
- vision BlipEncoderLayer: layer_norm1 is folded into self_attn (frozen_attention with the norm; the norm module
  passes its input through), layer_norm2 into mlp (frozen_mlp with the norm);
- text BlipTextLayer: attention.self and crossattention.self run frozen_attention (cross-attention recomputes
  K/V from the image embeddings in backward), intermediate runs frozen_mlp without the output projection (the
  adapted output.dense stays a Linear of its own).

A call takes the eager path, exactly Hugging Face's, when the lean one would be wrong or pointless: no grad mode
or an input that needs no gradient (inference, generate and its KV cache), a KV cache, a head_mask, attentions
asked for (output_attentions, at the call of the model or any tower, or in its config: transformers 5.x collects
them with hooks on the attention modules' second output), attention dropout in training, or a frozen weight of
the block unfrozen since.
"""

from __future__ import annotations

import functools
import inspect
import types
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.models.blip import modeling_blip, modeling_blip_text

from .ops.backbone import frozen_attention, frozen_mlp

ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "relu": "relu",
               "silu": "silu", "swish": "silu", "quick_gelu": "quick_gelu"}  # Hugging Face name -> frozen_mlp's
LEAN_ATTR = "_fastadapter_lean"
_FALLBACK_ARGUMENTS = ("head_mask", "past_key_value", "past_key_values", "cache")


@dataclass(eq=False)
class _Calls:
    """Whether the model call in progress asked for attentions: one entry per hooked model or tower call."""
    attentions: list = field(default_factory=list)


@dataclass(eq=False)
class _Lean:
    """What a patched submodule's lean forward needs; kept in the module's __dict__ (not a submodule, so the
    state dict is untouched; copied along by copy.deepcopy)."""
    calls: _Calls
    frozen: list  # the block's base parameters: all must stay frozen for the lean path
    dropout: nn.Module | None = None
    norm: nn.LayerNorm | None = None  # folded into this module
    owner: nn.Module | None = None  # for a folded norm: the module it is folded into
    activation: str = ""
    previous: object = None  # an instance forward that was there before


def _lean(lean: _Lean, module: nn.Module, x: torch.Tensor, other: torch.Tensor | None = None) -> bool:
    """Whether this call takes the lean path: something upstream trains (x or `other`, the keys' source, needs a
    gradient) and nothing asks for the eager one."""
    needs_grad = x.requires_grad or (other is not None and other.requires_grad)
    if not (torch.is_grad_enabled() and needs_grad) or any(lean.calls.attentions):
        return False
    if lean.dropout is not None and lean.dropout.p > 0 and module.training:
        return False  # SDPA's CPU math path would materialise the probabilities; and dropout needs its RNG
    return not any(p.requires_grad for p in lean.frozen)


def _eager(module, *args, **kwargs):
    previous = module.__dict__[LEAN_ATTR].previous
    return previous(*args, **kwargs) if previous is not None else type(module).forward(module, *args, **kwargs)


def _asks_eager(values: dict) -> bool:
    return any(values.get(name) is not None for name in _FALLBACK_ARGUMENTS) or bool(values.get("output_attentions"))


def _norm_args(norm):
    if norm is None:
        return {}
    return {"norm_weight": norm.weight, "norm_bias": norm.bias, "layer_norm": True, "eps": norm.eps}


def _folded_norm_forward(self, x):
    """A norm folded into the next op: it passes x through whenever that op runs lean."""
    owner = self.__dict__[LEAN_ATTR].owner
    return x if _lean(owner.__dict__[LEAN_ATTR], owner, x) else _eager(self, x)


def _vision_attention_forward(self, hidden_states, *args, **kwargs):
    lean = self.__dict__[LEAN_ATTR]
    if not _lean(lean, self, hidden_states):
        return _eager(self, hidden_states, *args, **kwargs)
    if args or _asks_eager(kwargs):  # layer_norm1 has already passed its input through: apply it here
        return _eager(self, type(lean.norm).forward(lean.norm, hidden_states), *args, **kwargs)
    d = self.embed_dim
    w, b = self.qkv.weight, self.qkv.bias
    bias = (None, None, None) if b is None else (b[:d], b[d:2 * d], b[2 * d:])
    context = frozen_attention(hidden_states, w[:d], bias[0], w[d:2 * d], bias[1], w[2 * d:], bias[2],
                               self.num_heads, scale=self.scale, **_norm_args(lean.norm))
    return self.projection(context), None


def _vision_mlp_forward(self, hidden_states):
    lean = self.__dict__[LEAN_ATTR]
    if not _lean(lean, self, hidden_states):
        return _eager(self, hidden_states)
    return frozen_mlp(hidden_states, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                      lean.activation, **_norm_args(lean.norm))


def _text_attention_forward(self, *args, **kwargs):
    lean = self.__dict__[LEAN_ATTR]
    values = _signature(type(self)).bind(self, *args, **kwargs).arguments
    values.update(values.pop("kwargs", {}))
    hidden_states, context = values["hidden_states"], values.get("encoder_hidden_states")
    if not _lean(lean, self, hidden_states, context) or _asks_eager(values):
        return _eager(self, *args, **kwargs)
    mask = values.get("encoder_attention_mask") if context is not None else values.get("attention_mask")
    out = frozen_attention(hidden_states, self.query.weight, self.query.bias, self.key.weight, self.key.bias,
                           self.value.weight, self.value.bias, self.num_attention_heads, key_input=context,
                           mask=mask,
                           scale=self.attention_head_size ** -0.5)
    return out, None


def _text_intermediate_forward(self, hidden_states):
    lean = self.__dict__[LEAN_ATTR]
    if not _lean(lean, self, hidden_states):
        return _eager(self, hidden_states)
    return frozen_mlp(hidden_states, self.dense.weight, self.dense.bias, activation=lean.activation)


_SIGNATURES: dict[type, inspect.Signature] = {}


def _signature(cls) -> inspect.Signature:
    if cls not in _SIGNATURES:
        _SIGNATURES[cls] = inspect.signature(cls.forward)
    return _SIGNATURES[cls]


def _activation(name, where: str) -> str:
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"fastadapter.patch(backbone='lean'): {where} uses activation {name!r}, which the lean "
                         f"backbone does not implement (it does {sorted(ACTIVATIONS)}); use backbone='eager'")
    return ACTIVATIONS[name]


def _set(module: nn.Module, forward, lean: _Lean, patched: list) -> None:
    lean.previous = module.__dict__.get("forward")
    module.__dict__[LEAN_ATTR] = lean
    module.forward = types.MethodType(forward, module)
    patched.append(module)


def _base(module: nn.Module, *more: nn.Module) -> list:
    """The module's own parameters (and those of modules folded into it), the adapters' left out."""
    return [p for m in (module, *more) for name, p in m.named_parameters() if "adapter" not in name.split(".")]


def _vision_layer(layer, calls: _Calls, patched: list, where: str) -> None:
    attention, mlp = layer.self_attn, layer.mlp
    _set(attention, _vision_attention_forward,
         _Lean(calls, _base(attention, layer.layer_norm1), dropout=attention.dropout, norm=layer.layer_norm1), patched)
    _set(mlp, _vision_mlp_forward, _Lean(calls, _base(mlp, layer.layer_norm2), norm=layer.layer_norm2,
                                         activation=_activation(mlp.config.hidden_act, where)), patched)
    for norm, owner in ((layer.layer_norm1, attention), (layer.layer_norm2, mlp)):
        _set(norm, _folded_norm_forward, _Lean(calls, [], owner=owner), patched)


def _text_layer(layer, calls: _Calls, patched: list, where: str) -> None:
    for attention in (layer.attention, getattr(layer, "crossattention", None)):
        if attention is not None:
            own = attention.self
            _set(own, _text_attention_forward, _Lean(calls, _base(own), dropout=own.dropout), patched)
    intermediate = layer.intermediate
    _set(intermediate, _text_intermediate_forward,
         _Lean(calls, _base(intermediate), activation=_activation(layer.config.hidden_act, where)), patched)


def _enter(calls: _Calls, module, args, kwargs):
    values = kwargs
    if "output_attentions" not in kwargs:
        try:
            values = _signature(type(module)).bind_partial(module, *args, **kwargs).arguments
        except TypeError:  # a call its forward will refuse itself, with its own message
            values = {}
        values = {**values.pop("kwargs", {}), **values}
    asked = values.get("output_attentions")
    if asked is None:
        asked = getattr(getattr(module, "config", None), "output_attentions", False)
    calls.attentions.append(bool(asked))


def _leave(calls: _Calls, module, args, output):
    calls.attentions.pop()


_ROOTS = (modeling_blip.BlipVisionModel, modeling_blip_text.BlipTextModel, modeling_blip_text.BlipTextLMHeadModel)


def check(model) -> None:
    """Raise before anything changes if a block of `model` cannot run lean."""
    for name, module in model.named_modules():
        if isinstance(module, modeling_blip.BlipEncoderLayer):
            _activation(module.mlp.config.hidden_act, name)
        elif isinstance(module, modeling_blip_text.BlipTextLayer):
            _activation(module.config.hidden_act, name)


def install(model) -> tuple[list, list]:
    """Make every BLIP block of `model` lean; returns (hook handles, patched modules) for uninstall."""
    check(model)
    calls, patched, hooks = _Calls(), [], []
    for name, module in model.named_modules():
        if isinstance(module, modeling_blip.BlipEncoderLayer):
            _vision_layer(module, calls, patched, name)
        elif isinstance(module, modeling_blip_text.BlipTextLayer):
            _text_layer(module, calls, patched, name)
    for root in [model, *(m for m in model.modules() if isinstance(m, _ROOTS) and m is not model)]:
        hooks.append(root.register_forward_pre_hook(functools.partial(_enter, calls), with_kwargs=True))
        hooks.append(root.register_forward_hook(functools.partial(_leave, calls), always_call=True))
    return hooks, patched


def uninstall(patched: list) -> None:
    for module in patched:
        previous = module.__dict__.pop(LEAN_ATTR).previous
        if previous is None:
            del module.__dict__["forward"]
        else:
            module.__dict__["forward"] = previous
