"""Adapter: the residual bottleneck module y = x + up(act(norm(down(x)))); ITCLoss: BLIP's contrastive loss
with its learnable temperature."""

from __future__ import annotations

import torch
from torch import nn

from .config import AdapterConfig
from .ops import adapter, itc_loss


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


class ITCLoss(nn.Module):
    """BLIP's image-text contrastive loss with its learnable temperature: initialised at `temperature`, clamped in
    place to [min_temperature, max_temperature] under no_grad before each use, as BLIP does (a functional clamp
    would cut the gradient at the bounds). The forward is fastadapter.itc_loss with this temperature."""

    def __init__(self, temperature: float = 0.07, min_temperature: float = 0.001, max_temperature: float = 0.5,
                 lambda_: float = 0.5, normalize: bool = True, backend: str = "auto"):
        super().__init__()
        if not 0 < min_temperature <= temperature <= max_temperature:
            raise ValueError(f"ITCLoss: need 0 < min_temperature <= temperature <= max_temperature, got "
                             f"{min_temperature}, {temperature}, {max_temperature}")
        self.temperature = nn.Parameter(torch.tensor(float(temperature)))
        self.min_temperature, self.max_temperature = min_temperature, max_temperature
        self.lambda_, self.normalize, self.backend = lambda_, normalize, backend

    def forward(self, image_feat, text_feat, image_ids=None, text_ids=None, momentum_image_feat=None,
                momentum_text_feat=None, alpha=0.0, reduction="mean"):
        with torch.no_grad():
            self.temperature.clamp_(self.min_temperature, self.max_temperature)
        return itc_loss(image_feat, text_feat, self.temperature, self.lambda_, self.normalize, image_ids, text_ids,
                        momentum_image_feat, momentum_text_feat, alpha, reduction, self.backend)

    def extra_repr(self) -> str:
        return (f"temperature in [{self.min_temperature}, {self.max_temperature}], lambda_={self.lambda_}, "
                f"backend={self.backend}")
