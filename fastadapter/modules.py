"""Adapter: the residual bottleneck module y = x + up(act(norm(down(x))))."""

from __future__ import annotations

import torch
from torch import nn

from .config import AdapterConfig
from .ops import adapter


class Adapter(nn.Module):
    """One residual adapter of width `width`. Its parameters are ordinary nn.Linear / norm modules
    (down, norm, up); the forward runs the op with config.backend (the plain PyTorch adapter for "eager")."""

    def __init__(self, width: int, config: AdapterConfig | None = None, device=None, dtype=None):
        super().__init__()
        self.config = config or AdapterConfig()
        r = self.config.bottleneck
        factory = {"device": device, "dtype": dtype}
        self.down = nn.Linear(width, r, **factory)
        if self.config.norm == "layernorm":
            self.norm = nn.LayerNorm(r, eps=self.config.eps, **factory)
        else:
            self.norm = nn.RMSNorm(r, eps=self.config.eps, **factory)
        self.up = nn.Linear(r, width, **factory)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        self.down.reset_parameters()
        self.norm.reset_parameters()
        if self.config.init == "zero":
            nn.init.zeros_(self.up.weight)
        else:
            nn.init.normal_(self.up.weight, std=0.01)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One lookup per submodule: nn.Module attribute lookups are a visible part of a small call's host time.
        c, down, norm, up = self.config, self.down, self.norm, self.up
        args = (x, down.weight, down.bias, norm.weight, getattr(norm, "bias", None), up.weight, up.bias)
        return adapter(*args, activation=c.activation, norm=c.norm, eps=c.eps, backend=c.backend,
                       recompute=c.recompute)

    def extra_repr(self) -> str:
        c = self.config
        return f"activation={c.activation}, backend={c.backend}, recompute={c.recompute}"
