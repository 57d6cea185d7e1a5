"""The ITM ops' contracts (csrc/itm/itm.h) in plain PyTorch, in blocks of rows: at most ROWS x n similarities at
a time, never n x n.

The margin loss's math: s_ij = <a_hat_i, b_hat_j> (raw dot products without normalisation), y_ij = 1 for a
positive; l_ij = y_ij (1 - s_ij) + (1 - y_ij) max(0, s_ij - m), row_loss_i = sum_j l_ij. Its gradient by s is
-y_ij + (1 - y_ij) [s_ij > m] (0 at the kink), times the row's incoming grad w_i; through the normalisation
grad a_i = (g_i - <g_i, a_hat_i> a_hat_i) / |a_i| with g_i = sum_j dS_ij b_hat_j.

The sampler: Gumbel-max, argmax_j of s_ij / tau + G_ij over the negatives, which draws j with probability
softmax(s / tau) restricted to them; here G comes from torch.rand on a generator seeded with the call's seed,
block by block (reproducible; not the same numbers as the fused backends' counter-based noise).
"""

from __future__ import annotations

import torch

ROWS = 1024
EPS = 1e-12
TINY = torch.finfo(torch.float32).tiny


def _normalized(x, normalize):
    x = x.float()
    if not normalize:
        return x, None
    norm = x.norm(dim=1, keepdim=True).clamp_min(EPS)
    return x / norm, norm


def _positives(a0, n, ids_a, ids_b, n_b, device):
    if ids_a is None:
        rows = torch.arange(a0, a0 + n, device=device)
        return rows[:, None] == torch.arange(n_b, device=device)[None, :]
    return ids_a[a0:a0 + n, None] == ids_b[None, :]


def forward(image, text, image_ids, text_ids, margin, normalize):
    a, _ = _normalized(image, normalize)
    b, _ = _normalized(text, normalize)
    loss = torch.empty(a.shape[0], dtype=torch.float32, device=a.device)
    for a0 in range(0, a.shape[0], ROWS):
        s = a[a0:a0 + ROWS] @ b.t()
        y = _positives(a0, s.shape[0], image_ids, text_ids, b.shape[0], a.device)
        loss[a0:a0 + ROWS] = torch.where(y, 1 - s, (s - margin).clamp_min(0)).sum(1)
    return loss


def _through_norm(g, x_hat, norm):
    return g if norm is None else (g - (g * x_hat).sum(1, keepdim=True) * x_hat) / norm


def backward(grad_row_loss, image, text, image_ids, text_ids, margin, normalize, image_grad, text_grad):
    a, a_norm = _normalized(image, normalize)
    b, b_norm = _normalized(text, normalize)
    w = grad_row_loss.float()
    grad_a = torch.zeros_like(a) if image_grad else None
    grad_b = torch.zeros_like(b) if text_grad else None
    for a0 in range(0, a.shape[0], ROWS):
        s = a[a0:a0 + ROWS] @ b.t()
        y = _positives(a0, s.shape[0], image_ids, text_ids, b.shape[0], a.device)
        ds = torch.where(y, -1.0, (s > margin).float()) * w[a0:a0 + ROWS, None]
        if image_grad:
            grad_a[a0:a0 + ROWS] = ds @ b
        if text_grad:
            grad_b += ds.t() @ a[a0:a0 + ROWS]
    return (_through_norm(grad_a, a, a_norm).to(image.dtype) if image_grad else image.new_empty(0),
            _through_norm(grad_b, b, b_norm).to(text.dtype) if text_grad else text.new_empty(0))


def _draw(a, b, inv_tau, ids_a, ids_b, generator):
    index = torch.empty(a.shape[0], dtype=torch.int64, device=a.device)
    for a0 in range(0, a.shape[0], ROWS):
        s = a[a0:a0 + ROWS] @ b.t() * inv_tau
        y = _positives(a0, s.shape[0], ids_a, ids_b, b.shape[0], a.device)
        u = torch.rand(s.shape, generator=generator, device=a.device).clamp_min_(TINY)  # log(0) never
        score = (s - torch.log(-torch.log(u))).masked_fill(y, float("-inf"))
        best, index[a0:a0 + ROWS] = score.max(1)
        index[a0:a0 + ROWS][best == float("-inf")] = -1
    return index


def sample(image, text, temperature, image_ids, text_ids, seed):
    generator = torch.Generator(device=image.device).manual_seed(seed)
    a, b = image.float(), text.float()
    inv_tau = 1.0 / temperature.float()
    return (_draw(a, b, inv_tau, image_ids, text_ids, generator),
            _draw(b, a, inv_tau, text_ids, image_ids, generator))
