"""AdapterConfig: what patch() inserts and how it runs.

Fields come in two kinds. ARCHITECTURE_FIELDS shape the adapters' weights and decide whether a saved adapter file
fits a model; every other field only chooses how the adapters run, and a later version may add more of them (with
defaults). So a file saved by an older version loads: a field it lacks takes its default. A field this version
does not know is a clear error (a file from a newer version, or a typo).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

from .ops.adapter.reference import ACTIVATIONS, NORMS
from .ops.registry import BACKENDS, DEPRECATED

TOWERS = ("vision", "text_encoder", "text_decoder")
INITS = ("zero", "normal")
BACKBONES = ("eager", "lean")
ARCHITECTURE_FIELDS = ("bottleneck", "activation", "norm", "eps", "towers")


@dataclass(frozen=True)
class AdapterConfig:
    """bottleneck: r, the adapter's hidden size. init: "zero" (up-projection zero: the patched model computes
    exactly what the unpatched one did) or "normal" (up-projection ~ N(0, 0.01²)). towers: which BLIP towers get
    adapters. backend: "auto" | "cpu" | "cuda" | "triton" | "torch" for the fused op, or "eager" for the plain
    PyTorch adapter with autograd (the unfused baseline; "reference" is its deprecated name). recompute: save only
    x and the norm statistics for backward (least memory, one more GEMM). fused_losses: the model's training
    losses (BlipModel's contrastive loss) computed by the fused, tiled ops instead of Hugging Face's; equal within
    float rounding. backbone: "eager" (Hugging Face's frozen blocks as they are) or "lean": every frozen block
    that backward crosses runs through ops that save no attention probabilities, q/k/v or MLP activations and
    recompute them in backward (fastadapter/backbone.py); outputs equal within float rounding."""

    bottleneck: int = 256
    activation: str = "gelu"
    norm: str = "layernorm"
    eps: float = 1e-5
    init: str = "zero"
    towers: tuple[str, ...] = TOWERS
    backend: str = "auto"
    recompute: bool = False
    fused_losses: bool = True
    backbone: str = "eager"

    def __post_init__(self):
        object.__setattr__(self, "towers", tuple(self.towers))
        if self.backend in DEPRECATED:
            warnings.warn(f"AdapterConfig: backend {self.backend!r} is now called {DEPRECATED[self.backend]!r}",
                          DeprecationWarning, stacklevel=3)
            object.__setattr__(self, "backend", DEPRECATED[self.backend])
        self._check()

    def _check(self):
        if isinstance(self.bottleneck, bool) or not isinstance(self.bottleneck, int) or self.bottleneck < 1:
            raise ValueError(f"AdapterConfig: bottleneck must be a positive integer, got {self.bottleneck!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"AdapterConfig: unknown activation {self.activation!r}; expected one of {ACTIVATIONS}")
        if self.norm not in NORMS:
            raise ValueError(f"AdapterConfig: unknown norm {self.norm!r}; expected one of {NORMS}")
        if not self.eps > 0:
            raise ValueError(f"AdapterConfig: eps must be positive, got {self.eps!r}")
        if self.init not in INITS:
            raise ValueError(f"AdapterConfig: unknown init {self.init!r}; expected one of {INITS}")
        unknown = [t for t in self.towers if t not in TOWERS]
        if unknown or not self.towers:
            raise ValueError(f"AdapterConfig: towers must be a non-empty subset of {TOWERS}, got {self.towers}")
        for flag in ("recompute", "fused_losses"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"AdapterConfig: {flag} must be True or False, got {getattr(self, flag)!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"AdapterConfig: unknown backbone {self.backbone!r}; expected one of {BACKBONES}")
        if self.backend not in ("auto", *BACKENDS):
            raise ValueError(f"AdapterConfig: unknown backend {self.backend!r}; expected 'auto' or one of "
                             f"{BACKENDS}")

    def replace(self, **changes) -> "AdapterConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"AdapterConfig has no field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "towers": list(self.towers)}

    @classmethod
    def from_dict(cls, data: dict) -> "AdapterConfig":
        """The config a saved dict describes; fields it lacks take their defaults (an older file)."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"AdapterConfig: unknown field(s) {sorted(unknown)} (saved by a newer fastadapter?); "
                             f"this version knows {[f.name for f in dataclasses.fields(cls)]}")
        return cls(**data)

    def architecture(self) -> dict:
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}
