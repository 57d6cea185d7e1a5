"""BLIP's momentum distillation with a frozen base: BLIP's momentum model is an EMA copy of the whole model, but
with the base frozen the EMA of every base weight is the weight itself, so the momentum model here is the same
model with an EMA of the adapters swapped in for a no-grad forward. Cost: one copy of the adapter weights, and per
step one more forward of the towers ITC reads (no backward, nothing saved); its ITC soft targets are
alpha * softmax of the momentum similarities, alpha ramped from 0 over the first epoch as BLIP does."""

from __future__ import annotations

import contextlib

import torch

MOMENTUM = 0.995
ALPHA = 0.4


class MomentumAdapters:
    def __init__(self, model, momentum: float = MOMENTUM):
        self.momentum = momentum
        self.params = {n: p for n, p in model.named_parameters() if ".adapter." in n}
        if not self.params:
            raise ValueError("momentum distillation needs adapters (patch the model first)")
        self.ema = {n: p.detach().clone() for n, p in self.params.items()}

    @torch.no_grad()
    def update(self):
        for name, p in self.params.items():
            self.ema[name].mul_(self.momentum).add_(p.detach(), alpha=1 - self.momentum)

    @contextlib.contextmanager
    def swapped(self):
        """The EMA adapters in the model for the block's duration (no grad)."""
        live = {n: p.detach().clone() for n, p in self.params.items()}
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.ema[name])
            try:
                yield
            finally:
                for name, p in self.params.items():
                    p.copy_(live[name])

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.ema)

    def load(self, tensors: dict[str, torch.Tensor]):
        missing = sorted(set(self.ema) - set(tensors))
        if missing:
            raise ValueError(f"the checkpoint has no EMA for {missing[:3]}")
        with torch.no_grad():
            for name, value in self.ema.items():
                value.copy_(tensors[name])


def ramped_alpha(alpha: float, epoch: int, step: int, steps_per_epoch: int) -> float:
    """BLIP's ramp: alpha * step / steps over the first epoch, alpha after."""
    return alpha if epoch > 1 else alpha * min(1.0, step / max(steps_per_epoch, 1))
