"""The fused losses patch() swaps into Hugging Face BLIP models (AdapterConfig.fused_losses, on by default).

- BlipModel's `return_loss=True` loss (CLIP-style: normalised embeddings, logit_scale.exp() as 1/tau, diagonal
  targets, the mean of both directions) is computed by fastadapter.itc_loss from the embeddings. The forward still
  returns its in-batch logits.
- BlipTextLMHeadModel's loss with `labels` (captioning's and VQA's decoder) is computed by fastadapter.lm_loss from
  the head's transformed hidden states, with the model's own label_smoothing and reduction ("none": per-sequence
  sums, as Hugging Face's). The full (B, L, V) logits are not built: `outputs.logits` is None on such a call (an
  empty (B, 0, V) tensor in the tuple form; call without labels, or with return_logits=True, for logits).
  generate() and calls without labels are unchanged.

Only hooks: a forward pre-hook takes the loss's argument away from Hugging Face for the call, a forward hook adds
ours; for the LM head a pre-hook on its decoder Linear hands it zero tokens and keeps its input. The values equal
Hugging Face's within float rounding, not bit for bit; unpatch removes the hooks.
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers.models.blip import modeling_blip, modeling_blip_text

from .config import AdapterConfig
from .ops.contrastive import TABLE as CONTRASTIVE
from .ops.contrastive import itc_loss
from .ops.lm_loss import TABLE as LM_LOSS
from .ops.lm_loss import lm_loss

_PENDING = "_fastadapter_loss_pending"  # per-call state between the pre-hook and the hook, innermost last


@functools.cache
def _forward_arguments(cls) -> tuple[str, ...]:
    """A model class's forward argument names without self: read once, not on every call of a hook."""
    return tuple(inspect.signature(cls.forward).parameters)[1:]


def _argument(module, args, kwargs, name, default=None, replace=False, replacement=None):
    """(value of forward argument `name` in this call, args, kwargs), optionally replaced for the call."""
    names = _forward_arguments(type(module))
    if name in kwargs:
        value = kwargs[name]
        if replace:
            kwargs[name] = replacement
        return value, args, kwargs
    index = names.index(name) if name in names else None
    if index is not None and index < len(args):
        value = args[index]
        if replace:
            args = (*args[:index], replacement, *args[index + 1:])
        return value, args, kwargs
    return default, args, kwargs


def _pending(module):
    return module.__dict__.setdefault(_PENDING, [])


def _take_return_loss(module, args, kwargs):
    """Pre-hook: remember whether the call asked for the loss, and ask Hugging Face not to compute it."""
    wanted, args, kwargs = _argument(module, args, kwargs, "return_loss", replace=True, replacement=False)
    _pending(module).append(bool(wanted))
    return args, kwargs


def _itc_hook(backend):
    def add_loss(module, args, kwargs, output):
        if not _pending(module).pop():
            return output
        embeds = (output.image_embeds, output.text_embeds) if not isinstance(output, tuple) else (output[3],
                                                                                                    output[2])
        temperature = torch.exp(-module.logit_scale).to(embeds[0].device)
        # Hugging Face's embeddings are already normalised; its loss is the mean of both directions.
        loss = itc_loss(embeds[0], embeds[1], temperature, lambda_=0.5, normalize=False, backend=backend)
        if isinstance(output, tuple):
            return (loss, *output)
        output.loss = loss
        return output

    return add_loss


def _take_labels(module, args, kwargs):
    """Pre-hook of the LM head model: with labels (and no return_logits), take them for lm_loss."""
    labels, _, _ = _argument(module, args, kwargs, "labels")
    return_logits, _, _ = _argument(module, args, kwargs, "return_logits", default=False)
    if labels is None or return_logits:
        _pending(module).append(None)
        return args, kwargs
    _, args, kwargs = _argument(module, args, kwargs, "labels", replace=True, replacement=None)
    names = _forward_arguments(type(module))
    if "use_cache" in names:  # Hugging Face skips its KV cache for a call with labels; without them it builds one
        _, args, kwargs = _argument(module, args, kwargs, "use_cache", replace=True, replacement=False)
        if names.index("use_cache") >= len(args):
            kwargs["use_cache"] = False
    reduction, _, _ = _argument(module, args, kwargs, "reduction", default="mean")
    shift_labels = kwargs.pop("shift_labels", None)  # transformers 5.x: targets already aligned with the logits
    _pending(module).append({"labels": labels, "shift_labels": shift_labels, "reduction": reduction,
                             "hidden": None})
    return args, kwargs


def _keep_decoder_input(model):
    def pre(decoder, args):
        pending = _pending(model)
        if not pending or pending[-1] is None:
            return None
        pending[-1]["hidden"] = args[0]
        return (args[0][..., :0, :],)  # zero tokens: the (B, L, V) logits are not computed

    return pre


def _lm_hook(backend):
    def add_loss(module, args, kwargs, output):
        state = _pending(module).pop()
        if state is None:
            return output
        hidden, decoder = state["hidden"], module.cls.predictions.decoder
        if state["shift_labels"] is None:  # next-token prediction: position t predicts label t + 1
            hidden, labels = hidden[:, :-1], state["labels"][:, 1:]
        else:
            labels = state["shift_labels"]
        reduction = state["reduction"]
        per_token = lm_loss(hidden, decoder.weight, decoder.bias, labels.to(hidden.device),
                            label_smoothing=module.label_smoothing, reduction=reduction, backend=backend)
        loss = per_token.sum(1) if reduction == "none" else per_token  # Hugging Face's per-sequence sums
        if isinstance(output, tuple):  # Hugging Face's order with a loss: (loss, logits, ...); logits are empty
            return (loss, *output)
        output.loss, output.logits = loss, None
        return output

    return add_loss


def loss_backend(config: AdapterConfig, table=CONTRASTIVE) -> str:
    """The config's backend where the loss op implements it (eager included), else the op's own auto."""
    info = table.info.get(config.backend)
    return config.backend if info is not None and info.available else "auto"


def install(model, config: AdapterConfig) -> list:
    """Hooks that hand the model's losses to the fused ops; empty when the config turns them off or the model
    computes none of them."""
    if not config.fused_losses:
        return []
    hooks = []
    for module in model.modules():
        if isinstance(module, modeling_blip.BlipModel):
            hooks += [module.register_forward_pre_hook(_take_return_loss, with_kwargs=True),
                      module.register_forward_hook(_itc_hook(loss_backend(config)), with_kwargs=True)]
        elif isinstance(module, modeling_blip_text.BlipTextLMHeadModel):
            hooks += [module.register_forward_pre_hook(_take_labels, with_kwargs=True),
                      module.cls.predictions.decoder.register_forward_pre_hook(_keep_decoder_input(module)),
                      module.register_forward_hook(_lm_hook(loss_backend(config, LM_LOSS)), with_kwargs=True)]
    return hooks
