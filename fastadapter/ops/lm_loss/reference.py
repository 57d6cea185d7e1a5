"""The LM loss in plain PyTorch with autograd, materialised: the full (T, V) logits of the head, then
F.cross_entropy. The `eager` backend: the baseline of the benchmarks and, in float64, the reference."""

from __future__ import annotations

import torch.nn.functional as F


def lm_loss(hidden, weight, bias, labels, label_smoothing=0.0, ignore_index=-100, reduction="mean"):
    logits = F.linear(hidden, weight, bias).float()
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing, ignore_index=ignore_index,
                           reduction=reduction)
