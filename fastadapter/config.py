"""AdapterConfig: what patch() inserts and how it runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .backends import BACKENDS
from .reference import ACTIVATIONS, NORMS

TOWERS = ("vision", "text_encoder", "text_decoder")
INITS = ("zero", "normal")
# The fields that shape the adapter weights; the others only choose how they run.
ARCHITECTURE_FIELDS = ("bottleneck", "activation", "norm", "eps", "towers")


@dataclass(frozen=True)
class AdapterConfig:
    """bottleneck: r, the adapter's hidden size (the paper's width is D=768; r=256 gives ~19 M parameters
    over 48 adapters). init: "zero" (up-projection zero: the patched model computes exactly what the
    unpatched one did) or "normal" (up-projection ~ N(0, 0.01²)). towers: which BLIP towers get adapters.
    backend: "auto" | "cpu" | "cuda" | "triton" | "eager" for the fused op, or "reference" for the plain
    PyTorch adapter with autograd (the unfused baseline). recompute: save only x and the norm statistics
    for backward (least memory, one more GEMM)."""

    bottleneck: int = 256
    activation: str = "gelu"
    norm: str = "layernorm"
    eps: float = 1e-5
    init: str = "zero"
    towers: tuple[str, ...] = TOWERS
    backend: str = "auto"
    recompute: bool = False

    def __post_init__(self):
        object.__setattr__(self, "towers", tuple(self.towers))
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
        if self.backend not in ("auto", "reference", *BACKENDS):
            raise ValueError(f"AdapterConfig: unknown backend {self.backend!r}; expected 'auto', 'reference' "
                             f"or one of {BACKENDS}")

    def replace(self, **changes) -> "AdapterConfig":
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise TypeError(f"AdapterConfig has no field(s) {sorted(unknown)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "towers": list(self.towers)}

    @classmethod
    def from_dict(cls, data: dict) -> "AdapterConfig":
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"AdapterConfig: unknown field(s) {sorted(unknown)}")
        return cls(**data)

    def architecture(self) -> dict:
        return {name: getattr(self, name) for name in ARCHITECTURE_FIELDS}
