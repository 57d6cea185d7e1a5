"""BLIP's image-text matching pieces in plain PyTorch with autograd, materialised N x N: the margin loss over all
pairs and the hard-negative draw by torch.multinomial over the masked softmax, as BLIP writes it. The `eager`
backend: the baseline of the benchmarks and, in float64, what the tiled backends are checked against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..contrastive.reference import positives


def similarities(image, text, normalize=True):
    if normalize:
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    return image @ text.t()


def pair_losses(image, text, margin=0.2, normalize=True, image_ids=None, text_ids=None):
    """(n_image, n_text): y (1 - s) + (1 - y) max(0, s - margin)."""
    s = similarities(image, text, normalize)
    y = positives(s.shape[0], s.shape[1], image_ids, text_ids, s.device).bool()
    return torch.where(y, 1 - s, (s - margin).clamp_min(0))


def itm_margin_loss(image, text, margin=0.2, normalize=True, image_ids=None, text_ids=None, reduction="paper"):
    total = pair_losses(image, text, margin, normalize, image_ids, text_ids).sum()
    return total / divisor(image.shape[0], text.shape[0], reduction)


def divisor(n_image, n_text, reduction):
    return n_image + n_text if reduction == "paper" else n_image * n_text if reduction == "mean" else 1


def negative_weights(image, text, temperature, image_ids=None, text_ids=None):
    """(i2t, t2i): softmax(s / tau) over each image's non-positive texts and each text's non-positive images."""
    with torch.no_grad():
        sim = image @ text.t() / temperature
        y = positives(sim.shape[0], sim.shape[1], image_ids, text_ids, sim.device).bool()
        masked = sim.masked_fill(y, float("-inf"))
        return masked.softmax(1), masked.t().softmax(1)


def sample_hard_negatives(image, text, temperature, image_ids=None, text_ids=None, generator=None):
    i2t, t2i = negative_weights(image, text, temperature, image_ids, text_ids)
    return (torch.multinomial(i2t, 1, generator=generator).squeeze(1),
            torch.multinomial(t2i, 1, generator=generator).squeeze(1))
