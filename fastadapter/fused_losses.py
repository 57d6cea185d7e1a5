"""The fused losses patch() swaps into Hugging Face BLIP models (AdapterConfig.fused_losses, on by default).

BlipModel's `return_loss=True` loss (CLIP-style: normalised embeddings, logit_scale.exp() as 1/tau, diagonal
targets, the mean of both directions) is computed by fastadapter.itc_loss from the embeddings instead: a forward
pre-hook turns Hugging Face's own loss off for the call, a forward hook adds ours. The forward still returns its
in-batch logits. The value equals Hugging Face's within float rounding, not bit for bit; unpatch removes the hooks.
"""

from __future__ import annotations

import inspect

import torch
from transformers.models.blip import modeling_blip

from .config import AdapterConfig
from .ops.contrastive import TABLE as CONTRASTIVE
from .ops.contrastive import itc_loss

_PENDING = "_fastadapter_loss_pending"  # per-call flags between the pre-hook and the hook, innermost last


def _return_loss_index(model) -> int | None:
    names = list(inspect.signature(type(model).forward).parameters)[1:]  # without self
    return names.index("return_loss") if "return_loss" in names else None


def _take_return_loss(module, args, kwargs):
    """Pre-hook: remember whether the call asked for the loss, and ask Hugging Face not to compute it."""
    index = _return_loss_index(module)
    wanted = bool(kwargs.get("return_loss"))
    if "return_loss" in kwargs:
        kwargs["return_loss"] = False
    elif index is not None and index < len(args):
        wanted = bool(args[index])
        args = (*args[:index], False, *args[index + 1:])
    module.__dict__.setdefault(_PENDING, []).append(wanted)
    return args, kwargs


def _itc_hook(backend):
    def add_loss(module, args, kwargs, output):
        if not module.__dict__[_PENDING].pop():
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


def loss_backend(config: AdapterConfig) -> str:
    """The config's backend where the loss op implements it (eager included), else the op's own auto."""
    info = CONTRASTIVE.info.get(config.backend)
    return config.backend if info is not None and info.available else "auto"


def install(model, config: AdapterConfig) -> list:
    """Hooks that hand the model's losses to the fused ops; empty when the config turns them off or the model
    computes none of them."""
    if not config.fused_losses or not isinstance(model, modeling_blip.BlipModel):
        return []
    return [model.register_forward_pre_hook(_take_return_loss, with_kwargs=True),
            model.register_forward_hook(_itc_hook(loss_backend(config)), with_kwargs=True)]
