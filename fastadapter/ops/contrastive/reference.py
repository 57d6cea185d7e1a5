"""The contrastive losses in plain PyTorch with autograd, materialised: the N x N logits, both softmaxes and
their targets, as BLIP writes them. The `eager` backend: the baseline of the benchmarks and, in float64, what
the tiled backends are checked against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def positives(n_query, n_keys, query_ids=None, key_ids=None, device=None):
    """The (n_query, n_keys) float mask of positive pairs: the diagonal without ids, equal ids with them."""
    if query_ids is None:
        return torch.eye(n_query, n_keys, device=device)
    return (query_ids.reshape(-1, 1) == key_ids.reshape(1, -1)).float()


def logits_and_targets(query, keys, temperature, normalize=True, query_ids=None, key_ids=None, soft_query=None,
                       soft_keys=None, alpha=0.0):
    """S = <q, k> / tau (on L2-normalised features when normalize) and the row and column target distributions:
    uniform over the positives, mixed with alpha * softmax of the soft features' logits (no grad) when given."""
    if normalize:
        query, keys = F.normalize(query, dim=-1), F.normalize(keys, dim=-1)
    logits = query @ keys.t() / temperature
    mask = positives(query.shape[0], keys.shape[0], query_ids, key_ids, query.device).to(logits.dtype)
    row_targets, column_targets = mask / mask.sum(1, keepdim=True), mask / mask.sum(0, keepdim=True)
    if soft_query is not None and alpha > 0:
        with torch.no_grad():
            if normalize:
                soft_query, soft_keys = F.normalize(soft_query, dim=-1), F.normalize(soft_keys, dim=-1)
            soft = (soft_query @ soft_keys.t() / temperature).to(logits.dtype)
            row_targets = alpha * soft.softmax(1) + (1 - alpha) * row_targets
            column_targets = alpha * soft.softmax(0) + (1 - alpha) * column_targets
    return logits, row_targets, column_targets


def per_query_losses(query, keys, temperature, normalize=True, query_ids=None, key_ids=None, soft_query=None,
                     soft_keys=None, alpha=0.0, columns=True):
    """(row losses (n_query,), column losses (n_keys,) or None): each query's cross entropy against its targets
    over the keys, and each key's over the queries."""
    logits, row_targets, column_targets = logits_and_targets(query, keys, temperature, normalize, query_ids,
                                                             key_ids, soft_query, soft_keys, alpha)
    rows = -(row_targets * logits.log_softmax(1)).sum(1)
    return rows, (-(column_targets * logits.log_softmax(0)).sum(0) if columns else None)


def reduce(losses, reduction):
    return losses.mean() if reduction == "mean" else losses.sum() if reduction == "sum" else losses


def contrastive_loss(query, keys, temperature=0.07, normalize=True, query_ids=None, key_ids=None, soft_query=None,
                     soft_keys=None, alpha=0.0, reduction="mean"):
    rows, _ = per_query_losses(query, keys, temperature, normalize, query_ids, key_ids, soft_query, soft_keys,
                               alpha, columns=False)
    return reduce(rows, reduction)


def itc_loss(image_feat, text_feat, temperature=0.07, lambda_=0.5, normalize=True, image_ids=None, text_ids=None,
             momentum_image_feat=None, momentum_text_feat=None, alpha=0.0, reduction="mean"):
    rows, columns = per_query_losses(image_feat, text_feat, temperature, normalize, image_ids, text_ids,
                                     momentum_image_feat, momentum_text_feat, alpha)
    if reduction == "none":
        return lambda_ * rows, (1 - lambda_) * columns
    return lambda_ * reduce(rows, reduction) + (1 - lambda_) * reduce(columns, reduction)
