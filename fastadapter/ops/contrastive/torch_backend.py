"""The contrastive op's saved-for-backward contract (csrc/contrastive/contrastive.h) in plain PyTorch, tiled like
the fused backends: no N x N tensor, an online log-sum-exp per row and per column, only per-row and per-column
statistics kept for backward, which recomputes the tiles. Float32 arithmetic whatever the feature dtype.

The math, for one side A (the queries when computing rows, the keys when computing columns) against the other
side B, with S = <a_hat, b_hat> / tau over a tile:
- forward per row a: lse_a = log sum_b exp S_ab; hard_a = sum over positives of S_ab; count_a = #positives;
  with soft targets, the soft logits M_ab = <sa_hat, sb_hat> / tau give soft_lse_a and sum_b softmax(M)_ab S_ab,
  all accumulated online, so loss_a = lse_a - (1 - alpha) hard_a / count_a - alpha sum_b softmax(M)_ab S_ab;
- backward: dS_ab = g_a (exp(S_ab - lse_a) - t_ab) + g_b (exp(S_ab - lse_b) - t'_ab) (both directions' terms,
  t and t' their targets), R_a = sum_b dS_ab S_ab, U_a = sum_b dS_ab b_hat; then grad a_hat = U_a / tau and,
  through the normalisation, grad a = (U_a / tau - R_a a_hat) / |a|; grad tau = -sum_a R_a / tau.
"""

from __future__ import annotations

import torch

BLOCK = 1024  # rows and columns per tile; tests lower it to cross tile edges on small inputs
EPS = 1e-12  # as F.normalize


def _features(x, normalize):
    """x in float32, normalised when asked, and 1/|x| (None without normalize)."""
    x = x.float()
    if not normalize:
        return x, None
    inv_norm = x.norm(dim=1).clamp_min(EPS).reciprocal()
    return x * inv_norm[:, None], inv_norm


def _positive_tile(ids_a, ids_b, a0, a1, b0, b1, device):
    if ids_a is None:
        return (torch.arange(a0, a1, device=device)[:, None] == torch.arange(b0, b1, device=device)[None, :]).float()
    return (ids_a[a0:a1, None] == ids_b[None, b0:b1]).float()


def _online(running_max, running_sum, tile, weights=None):
    """One tile's step of an online log-sum-exp along dim 1; with weights, also sum exp(tile) * weights."""
    new_max = torch.maximum(running_max, tile.amax(1))
    scale = torch.exp(running_max - new_max)
    e = torch.exp(tile - new_max[:, None])
    return new_max, scale, running_sum * scale + e.sum(1), e


def side_stats(a, b, ids_a, ids_b, soft_a, soft_b, inv_tau, alpha):
    """(losses (n_a,), stats (3, n_a): lse, soft_lse, positive count) of side a's rows against b."""
    soft = soft_a is not None and alpha > 0
    losses, stats = [], []
    for a0 in range(0, a.shape[0], BLOCK):
        a1 = min(a0 + BLOCK, a.shape[0])
        full = torch.full((a1 - a0,), float("-inf"), device=a.device)
        m, z, hard, count = full, torch.zeros_like(full), torch.zeros_like(full), torch.zeros_like(full)
        sm, sz, sa = full.clone(), torch.zeros_like(full), torch.zeros_like(full)
        for b0 in range(0, b.shape[0], BLOCK):
            b1 = min(b0 + BLOCK, b.shape[0])
            s = a[a0:a1] @ b[b0:b1].t() * inv_tau
            m, _, z, _ = _online(m, z, s)
            p = _positive_tile(ids_a, ids_b, a0, a1, b0, b1, a.device)
            hard, count = hard + (p * s).sum(1), count + p.sum(1)
            if soft:
                sm, scale, sz, e = _online(sm, sz, soft_a[a0:a1] @ soft_b[b0:b1].t() * inv_tau)
                sa = sa * scale + (e * s).sum(1)
        lse = m + z.log()
        loss = lse - (1 - alpha) * hard / count
        if soft:
            loss = loss - alpha * sa / sz
        losses.append(loss)
        stats.append(torch.stack([lse, sm + sz.log() if soft else torch.zeros_like(lse), count]))
    return torch.cat(losses), torch.cat(stats, 1)


def _targets_term(grad, s, stats, p, soft_logits, alpha, dim):
    """grad * (softmax(S) - targets) of one direction over a tile, its statistics broadcast along `dim`."""
    lse, soft_lse, count = (stats[i].unsqueeze(dim) for i in range(3))
    t = (1 - alpha) * p / count
    if soft_logits is not None:
        t = t + alpha * torch.exp(soft_logits - soft_lse)
    return grad.unsqueeze(dim) * (torch.exp(s - lse) - t)


def side_grad(a, b, ids_a, ids_b, soft_a, soft_b, inv_tau, alpha, grad_a, grad_b, stats_a, stats_b, want_grad):
    """(grad of a_hat * tau, or None; R (n_a,)): side a's rows, both directions' loss terms."""
    soft = soft_a is not None and alpha > 0
    grads, r_sums = [], []
    for a0 in range(0, a.shape[0], BLOCK):
        a1 = min(a0 + BLOCK, a.shape[0])
        u = torch.zeros(a1 - a0, a.shape[1], device=a.device)
        r = torch.zeros(a1 - a0, device=a.device)
        for b0 in range(0, b.shape[0], BLOCK):
            b1 = min(b0 + BLOCK, b.shape[0])
            s = a[a0:a1] @ b[b0:b1].t() * inv_tau
            p = _positive_tile(ids_a, ids_b, a0, a1, b0, b1, a.device)
            m = soft_a[a0:a1] @ soft_b[b0:b1].t() * inv_tau if soft else None
            ds = torch.zeros_like(s)
            if grad_a is not None:
                ds += _targets_term(grad_a[a0:a1], s, stats_a[:, a0:a1], p, m, alpha, 1)
            if grad_b is not None:
                ds += _targets_term(grad_b[b0:b1], s, stats_b[:, b0:b1], p, m, alpha, 0)
            r += (ds * s).sum(1)
            if want_grad:
                u += ds @ b[b0:b1]
        grads.append(u)
        r_sums.append(r)
    return (torch.cat(grads) if want_grad else None), torch.cat(r_sums)


def _input_grad(u, r, x_hat, inv_norm, inv_tau):
    if inv_norm is None:
        return u * inv_tau
    return (u * inv_tau - r[:, None] * x_hat) * inv_norm[:, None]


def _prepared(query, keys, temperature, soft_query, soft_keys, alpha, normalize):
    """Both sides in float32 (normalised when asked) with 1/|x|, the soft features likewise, and 1/tau."""
    soft = soft_query is not None and alpha > 0
    sq = _features(soft_query, normalize)[0] if soft else None
    sk = _features(soft_keys, normalize)[0] if soft else None
    return _features(query, normalize), _features(keys, normalize), sq, sk, 1.0 / temperature.float()


def forward(query, keys, temperature, query_ids, key_ids, soft_query, soft_keys, alpha, normalize, rows, columns):
    (q, _), (k, _), sq, sk, inv_tau = _prepared(query, keys, temperature, soft_query, soft_keys, alpha, normalize)
    empty = q.new_empty(0), q.new_empty(3, 0)
    row = side_stats(q, k, query_ids, key_ids, sq, sk, inv_tau, alpha) if rows else empty
    column = side_stats(k, q, key_ids, query_ids, sk, sq, inv_tau, alpha) if columns else empty
    return row[0], column[0], row[1], column[1]


def backward(grad_row_loss, grad_column_loss, query, keys, temperature, query_ids, key_ids, soft_query, soft_keys,
             alpha, normalize, row_stats, column_stats, query_grad, keys_grad, temperature_grad):
    (q, q_inv), (k, k_inv), sq, sk, inv_tau = _prepared(query, keys, temperature, soft_query, soft_keys, alpha,
                                                        normalize)
    g_row = grad_row_loss.float() if grad_row_loss is not None and row_stats.shape[1] else None
    g_col = grad_column_loss.float() if grad_column_loss is not None and column_stats.shape[1] else None
    grad_q = grad_k = None
    r_total = None
    if query_grad or temperature_grad:
        u, r = side_grad(q, k, query_ids, key_ids, sq, sk, inv_tau, alpha, g_row, g_col, row_stats, column_stats,
                         query_grad)
        grad_q = _input_grad(u, r, q, q_inv, inv_tau).to(query.dtype) if query_grad else None
        r_total = r.sum()
    if keys_grad:
        u, r = side_grad(k, q, key_ids, query_ids, sk, sq, inv_tau, alpha, g_col, g_row, column_stats, row_stats,
                         True)
        grad_k = _input_grad(u, r, k, k_inv, inv_tau).to(keys.dtype)
    grad_tau = (-r_total * inv_tau).to(temperature.dtype) if temperature_grad else temperature.new_empty(0)
    return (query.new_empty(0) if grad_q is None else grad_q, keys.new_empty(0) if grad_k is None else grad_k,
            grad_tau)
