"""patch() / unpatch(): adapters after the feed-forward network of every BLIP transformer block.

Insertion points (the same in transformers 4.5x and 5.x):
- vision BlipEncoderLayer: on `mlp`'s output, before `+ residual`;
- text BlipTextLayer (encoder and decoder): on `output.dense`'s output, before `LayerNorm(h + input)`.

The adapted module keeps its place and gets the adapter as a child named `adapter`, applied by a
forward hook on its output. So patching never depends on forward signatures, and the base model's
state-dict keys stay as they were (a base checkpoint still loads into a patched model, and vice versa).
The model's training losses are handed to the fused ops (fused_losses.py) unless AdapterConfig.fused_losses is off.

Patching twice: the same config again is a no-op; a different config raises AlreadyPatchedError
(call unpatch() first), so adapters never stack by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from transformers.models.blip import modeling_blip, modeling_blip_text

from . import backbone, fused_losses
from .config import AdapterConfig
from .modules import Adapter
from .paper_model import BlipPaperModel

SUPPORTED_MODELS = (
    modeling_blip.BlipForConditionalGeneration,
    modeling_blip.BlipForImageTextRetrieval,
    modeling_blip.BlipForQuestionAnswering,
    modeling_blip.BlipModel,
    modeling_blip.BlipVisionModel,
    modeling_blip_text.BlipTextModel,
    modeling_blip_text.BlipTextLMHeadModel,
    BlipPaperModel,  # the paper's three towers on one vision encoder
)
ADAPTER_ATTR = "adapter"


class UnsupportedModelError(TypeError):
    pass


class AlreadyPatchedError(RuntimeError):
    pass


@dataclass(frozen=True)
class Site:
    tower: str  # "vision" | "text_encoder" | "text_decoder"
    name: str  # qualified name of the module whose output is adapted
    module: nn.Module
    width: int


@dataclass
class PatchState:
    config: AdapterConfig
    sites: list[Site]
    hooks: list = field(default_factory=list)
    lean: list = field(default_factory=list)  # submodules whose forward backbone="lean" replaced
    requires_grad: dict = field(default_factory=dict)  # base parameter name -> its flag before patching


def check_supported(model) -> None:
    if not isinstance(model, SUPPORTED_MODELS):
        names = ", ".join(cls.__name__ for cls in SUPPORTED_MODELS)
        raise UnsupportedModelError(f"fastadapter supports Hugging Face BLIP models ({names}); "
                                    f"got {type(model).__name__}")


def tower_prefixes(model) -> dict[str, list[str]]:
    """Qualified names of each tower's root module ("" when the model is that tower)."""
    prefixes = {"vision": [], "text_encoder": [], "text_decoder": []}
    decoders = [n for n, m in model.named_modules() if isinstance(m, modeling_blip_text.BlipTextLMHeadModel)]
    for name, module in model.named_modules():
        if isinstance(module, modeling_blip.BlipVisionModel):
            prefixes["vision"].append(name)
        elif isinstance(module, modeling_blip_text.BlipTextLMHeadModel):
            prefixes["text_decoder"].append(name)
        elif isinstance(module, modeling_blip_text.BlipTextModel) and not any(_within(name, d) for d in decoders):
            prefixes["text_encoder"].append(name)
    return prefixes


def _within(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def tower_of(name: str, prefixes: dict[str, list[str]]) -> str | None:
    for tower, roots in prefixes.items():
        if any(_within(name, root) for root in roots):
            return tower
    return None


def find_sites(model) -> list[Site]:
    """Every insertion point of the model, in module order."""
    prefixes = tower_prefixes(model)
    sites = []
    for name, module in model.named_modules():
        if isinstance(module, modeling_blip.BlipEncoderLayer):
            sites.append(Site("vision", _join(name, "mlp"), module.mlp, module.mlp.fc2.out_features))
        elif isinstance(module, modeling_blip_text.BlipTextLayer):
            dense = module.output.dense
            sites.append(Site(tower_of(name, prefixes), _join(name, "output.dense"), dense, dense.out_features))
    return sites


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _apply_adapter(module, args, output):
    return getattr(module, ADAPTER_ATTR)(output)


def patch_state(model) -> PatchState | None:
    return getattr(model, "_fastadapter", None)


def patch(model, config: AdapterConfig | None = None, **overrides):
    """Insert an adapter after the FFN of every transformer block of the chosen towers, freeze every base
    parameter, and return the model (patched in place). Keyword overrides replace config fields."""
    check_supported(model)
    config = (config or AdapterConfig()).replace(**overrides) if overrides else (config or AdapterConfig())
    state = patch_state(model)
    if state is not None:
        if state.config == config:
            return model
        raise AlreadyPatchedError(f"{type(model).__name__} is already patched with {state.config}; "
                                  "call fastadapter.unpatch(model) before patching with another config")
    sites = [s for s in find_sites(model) if s.tower in config.towers]
    if not sites:
        raise UnsupportedModelError(f"{type(model).__name__} has no transformer blocks in towers {config.towers}")
    if config.backbone == "lean":
        backbone.check(model)
    state = PatchState(config, sites, requires_grad={n: p.requires_grad for n, p in model.named_parameters()})
    for p in model.parameters():
        p.requires_grad_(False)
    for site in sites:
        reference = next(site.module.parameters())
        site.module.add_module(ADAPTER_ATTR, Adapter(site.width, config, device=reference.device,
                                                     dtype=reference.dtype))
        state.hooks.append(site.module.register_forward_hook(_apply_adapter))
    state.hooks.extend(fused_losses.install(model, config))
    if config.backbone == "lean":
        hooks, state.lean = backbone.install(model)
        state.hooks.extend(hooks)
    model._fastadapter = state
    return model


def unpatch(model):
    """Remove every adapter and restore the base parameters' requires_grad flags. Returns the model."""
    state = patch_state(model)
    if state is None:
        raise ValueError(f"{type(model).__name__} is not patched by fastadapter")
    for hook in state.hooks:
        hook.remove()
    backbone.uninstall(state.lean)
    for site in state.sites:
        delattr(site.module, ADAPTER_ATTR)
    for name, p in model.named_parameters():
        p.requires_grad_(state.requires_grad.get(name, p.requires_grad))
    del model._fastadapter
    return model


def adapters(model) -> dict[str, Adapter]:
    """The adapters of a patched model, by the qualified name of the module they adapt."""
    state = patch_state(model)
    if state is None:
        raise ValueError(f"{type(model).__name__} is not patched by fastadapter; call fastadapter.patch(model)")
    return {site.name: getattr(site.module, ADAPTER_ATTR) for site in state.sites}
