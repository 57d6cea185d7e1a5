"""The contrastive op's triton backend (contract: csrc/contrastive/contrastive.h; math:
fastadapter/ops/contrastive/torch_backend.py). Two kernels, each a program per block of one side's rows walking
the other side in tiles, flash-attention style:

- `_stats_kernel`: S = <a, b> |a|^-1 |b|^-1 / tau by tl.dot over the width in chunks, an online log-sum-exp per
  row, the positives' sum and count, and the soft targets' online softmax-weighted sum of S;
- `_grad_kernel`: recomputes S (and the soft logits), forms dS from both directions' saved statistics, and
  accumulates U = sum_b dS_ab b_hat in registers, R = sum_b dS_ab S_ab per row.

Columns are the rows of the swapped problem (keys against queries), so a direction costs one launch and no
cross-program reduction: per-column partials would take O(N^2 / BLOCK) memory. Everything accumulates in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastadapter.ops.contrastive.torch_backend import EPS

BLOCK_M = 32
BLOCK_N = 32
BLOCK_K = 32  # the chunk of the feature width per dot
# Sized so that no kernel spills inside its loop on sm_80 or sm_90, checked by tests/test_triton_compile_contrastive.py:
# 8 warps, and float32 dots in exact FMA ("ieee"): TF32 is not float32 accuracy, and tf32x3's split operands spill.
NUM_WARPS = 8
PRECISION = "ieee"  # 16-bit inputs use the tensor cores whatever this says


@triton.jit
def logits_tile(a_ptr, rows, row_ok, a_scale, b_ptr, b_inv_ptr, cols, col_ok, d, PRECISION: tl.constexpr,
            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One tile of logits, a's rows against b's rows `cols`: the dot product over d in BLOCK_K chunks (operands
    stay small: a full-width fp32 dot spills), then scaled by inv_tau / (|a| |b|) (a_scale holds a's part)."""
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, d, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + rows[:, None] * d + ks[None, :], mask=row_ok[:, None] & (ks[None, :] < d), other=0.0)
        b = tl.load(b_ptr + cols[:, None] * d + ks[None, :], mask=col_ok[:, None] & (ks[None, :] < d), other=0.0)
        acc += tl.dot(a, tl.trans(b), input_precision=PRECISION)
    b_inv = tl.load(b_inv_ptr + cols, mask=col_ok, other=1.0)
    return acc * a_scale[:, None] * b_inv[None, :], b_inv


@triton.jit
def positive_pairs(rows, cols, row_ok, col_ok, ids_a_ptr, ids_b_ptr, HAS_IDS: tl.constexpr):
    valid = row_ok[:, None] & col_ok[None, :]
    if HAS_IDS:
        ida = tl.load(ids_a_ptr + rows, mask=row_ok, other=0)
        idb = tl.load(ids_b_ptr + cols, mask=col_ok, other=0)
        return valid & (ida[:, None] == idb[None, :])
    return valid & (rows[:, None] == cols[None, :])


@triton.jit
def _stats_kernel(a_ptr, b_ptr, a_inv_ptr, b_inv_ptr, ids_a_ptr, ids_b_ptr, sa_ptr, sb_ptr, sa_inv_ptr, sb_inv_ptr,
                  inv_tau_ptr, loss_ptr, stats_ptr, n_a, n_b, d, soft_d, alpha, HAS_IDS: tl.constexpr,
                  SOFT: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_a
    inv_tau = tl.load(inv_tau_ptr)
    a_scale = tl.load(a_inv_ptr + rows, mask=row_ok, other=1.0) * inv_tau
    sa_scale = tl.load(sa_inv_ptr + rows, mask=row_ok, other=1.0) * inv_tau
    m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    z = tl.zeros((BLOCK_M,), tl.float32)
    hard = tl.zeros((BLOCK_M,), tl.float32)
    count = tl.zeros((BLOCK_M,), tl.float32)
    soft_m = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    soft_z = tl.zeros((BLOCK_M,), tl.float32)
    soft_acc = tl.zeros((BLOCK_M,), tl.float32)
    for b0 in range(0, n_b, BLOCK_N):
        cols = b0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_b
        s, _ = logits_tile(a_ptr, rows, row_ok, a_scale, b_ptr, b_inv_ptr, cols, col_ok, d, PRECISION, BLOCK_M, BLOCK_N,
                       BLOCK_K)
        s_masked = tl.where(col_ok[None, :], s, float("-inf"))
        s = tl.where(col_ok[None, :], s, 0.0)
        new_m = tl.maximum(m, tl.max(s_masked, 1))
        z = z * tl.exp(m - new_m) + tl.sum(tl.exp(s_masked - new_m[:, None]), 1)
        m = new_m
        p = positive_pairs(rows, cols, row_ok, col_ok, ids_a_ptr, ids_b_ptr, HAS_IDS)
        hard += tl.sum(tl.where(p, s, 0.0), 1)
        count += tl.sum(p.to(tl.float32), 1)
        if SOFT:
            ms, _ = logits_tile(sa_ptr, rows, row_ok, sa_scale, sb_ptr, sb_inv_ptr, cols, col_ok, soft_d, PRECISION,
                            BLOCK_M, BLOCK_N, BLOCK_K)
            ms = tl.where(col_ok[None, :], ms, float("-inf"))
            new_sm = tl.maximum(soft_m, tl.max(ms, 1))
            scale = tl.exp(soft_m - new_sm)
            e = tl.exp(ms - new_sm[:, None])
            soft_z = soft_z * scale + tl.sum(e, 1)
            soft_acc = soft_acc * scale + tl.sum(e * s, 1)
            soft_m = new_sm
    lse = m + tl.log(z)
    loss = lse - (1 - alpha) * hard / tl.where(row_ok, count, 1.0)  # rows past the end have no positives
    soft_lse = tl.zeros((BLOCK_M,), tl.float32)
    if SOFT:
        loss -= alpha * soft_acc / soft_z
        soft_lse = soft_m + tl.log(soft_z)
    tl.store(loss_ptr + rows, loss, mask=row_ok)
    tl.store(stats_ptr + rows, lse, mask=row_ok)
    tl.store(stats_ptr + n_a + rows, soft_lse, mask=row_ok)
    tl.store(stats_ptr + 2 * n_a + rows, count, mask=row_ok)


@triton.jit
def _direction_term(g, lse, soft_lse, count, s, p, ms, alpha, SOFT: tl.constexpr):
    """g (softmax(S) - targets) of one direction over a tile; g and the statistics broadcast already."""
    t = (1 - alpha) * p.to(tl.float32) / count
    if SOFT:
        t += alpha * tl.exp(ms - soft_lse)
    return g * (tl.exp(s - lse) - t)


@triton.jit
def _grad_kernel(a_ptr, b_ptr, a_inv_ptr, b_inv_ptr, ids_a_ptr, ids_b_ptr, sa_ptr, sb_ptr, sa_inv_ptr, sb_inv_ptr,
                 inv_tau_ptr, g_a_ptr, stats_a_ptr, g_b_ptr, stats_b_ptr, grad_ptr, r_ptr, n_a, n_b, d, soft_d,
                 alpha, HAS_IDS: tl.constexpr, SOFT: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr,
                 WANT_GRAD: tl.constexpr, NORMALIZE: tl.constexpr, PRECISION: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_a
    dims = tl.arange(0, BLOCK_D)
    inv_tau = tl.load(inv_tau_ptr)
    a_inv = tl.load(a_inv_ptr + rows, mask=row_ok, other=1.0)
    sa_scale = tl.load(sa_inv_ptr + rows, mask=row_ok, other=1.0) * inv_tau
    if ROWS:
        g_a = tl.load(g_a_ptr + rows, mask=row_ok, other=0.0)[:, None]
        lse_a = tl.load(stats_a_ptr + rows, mask=row_ok, other=0.0)[:, None]
        soft_lse_a = tl.load(stats_a_ptr + n_a + rows, mask=row_ok, other=0.0)[:, None]
        count_a = tl.load(stats_a_ptr + 2 * n_a + rows, mask=row_ok, other=1.0)[:, None]
    u = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    r = tl.zeros((BLOCK_M,), tl.float32)
    for b0 in range(0, n_b, BLOCK_N):
        cols = b0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_b
        s, b_inv = logits_tile(a_ptr, rows, row_ok, a_inv * inv_tau, b_ptr, b_inv_ptr, cols, col_ok, d, PRECISION,
                           BLOCK_M, BLOCK_N, BLOCK_K)
        p = positive_pairs(rows, cols, row_ok, col_ok, ids_a_ptr, ids_b_ptr, HAS_IDS)
        ms = s
        if SOFT:
            ms, _ = logits_tile(sa_ptr, rows, row_ok, sa_scale, sb_ptr, sb_inv_ptr, cols, col_ok, soft_d, PRECISION,
                            BLOCK_M, BLOCK_N, BLOCK_K)
        ds = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        if ROWS:
            ds += _direction_term(g_a, lse_a, soft_lse_a, count_a, s, p, ms, alpha, SOFT)
        if COLS:
            g_b = tl.load(g_b_ptr + cols, mask=col_ok, other=0.0)[None, :]
            lse_b = tl.load(stats_b_ptr + cols, mask=col_ok, other=0.0)[None, :]
            soft_lse_b = tl.load(stats_b_ptr + n_b + cols, mask=col_ok, other=0.0)[None, :]
            count_b = tl.load(stats_b_ptr + 2 * n_b + cols, mask=col_ok, other=1.0)[None, :]
            ds += _direction_term(g_b, lse_b, soft_lse_b, count_b, s, p, ms, alpha, SOFT)
        ds = tl.where(row_ok[:, None] & col_ok[None, :], ds, 0.0)
        r += tl.sum(ds * s, 1)
        if WANT_GRAD:  # the full-width b tile: u is (BLOCK_M, BLOCK_D) float32 in registers
            b = tl.load(b_ptr + cols[:, None] * d + dims[None, :], mask=col_ok[:, None] & (dims[None, :] < d),
                        other=0.0)
            u += tl.dot((ds * b_inv[None, :]).to(b.dtype), b, input_precision=PRECISION)
    tl.store(r_ptr + rows, r, mask=row_ok)
    if WANT_GRAD:
        grad = u * inv_tau
        if NORMALIZE:
            a = tl.load(a_ptr + rows[:, None] * d + dims[None, :], mask=row_ok[:, None] & (dims[None, :] < d),
                        other=0.0)
            grad = (grad - r[:, None] * a.to(tl.float32) * a_inv[:, None]) * a_inv[:, None]
        tl.store(grad_ptr + rows[:, None] * d + dims[None, :], grad.to(grad_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & (dims[None, :] < d))


class FeatureSide:
    """One side's tensors as the kernels take them: contiguous features, float32 inverse norms (ones without
    normalisation), int64 ids (or a placeholder) and the soft features with theirs."""

    def __init__(self, x, ids, soft, normalize):
        self.x = x.contiguous()
        self.n, self.d = self.x.shape
        self.inv = self._inverse_norms(self.x, normalize)
        self.ids = ids.to(torch.int64).contiguous() if ids is not None else self.inv
        self.soft = soft.contiguous() if soft is not None else self.x
        self.soft_inv = self._inverse_norms(self.soft, normalize) if soft is not None else self.inv

    @staticmethod
    def _inverse_norms(x, normalize):
        if not normalize:
            return torch.ones(x.shape[0], device=x.device, dtype=torch.float32)
        return x.float().norm(dim=1).clamp_min(EPS).reciprocal()

    def args(self):
        return self.x, self.inv, self.ids, self.soft, self.soft_inv


def _meta(a, has_ids, soft, block_m=BLOCK_M):
    return dict(HAS_IDS=has_ids, SOFT=soft, PRECISION=PRECISION, BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
                num_warps=NUM_WARPS)


def stats_block_m(dtype, soft):
    """The forward's rows per program: ptxas keeps float32 without soft targets in registers only at 64 rows."""
    return 2 * BLOCK_M if dtype == torch.float32 and not soft else BLOCK_M


def grad_block_m(dtype, block_d):
    """The backward's rows per program: its float32 accumulator u is (rows, block_d) in registers, so half the
    rows for float32 (FMA dots need their operands in registers too) and for widths past 256."""
    return BLOCK_M // 2 if dtype == torch.float32 or block_d > 256 else BLOCK_M


def _pairwise(a, b):
    """Arguments in the kernels' order: both sides' features, norms, ids, soft features, soft norms."""
    (ax, ainv, aid, asoft, asinv), (bx, binv, bid, bsoft, bsinv) = a.args(), b.args()
    return ax, bx, ainv, binv, aid, bid, asoft, bsoft, asinv, bsinv


def _side_stats(a, b, inv_tau, alpha, has_ids, soft):
    loss = torch.empty(a.n, device=a.x.device, dtype=torch.float32)
    stats = torch.empty(3, a.n, device=a.x.device, dtype=torch.float32)
    block_m = stats_block_m(a.x.dtype, soft)
    _stats_kernel[(triton.cdiv(a.n, block_m),)](*_pairwise(a, b), inv_tau, loss, stats, a.n, b.n, a.d,
                                                a.soft.shape[1], float(alpha), **_meta(a, has_ids, soft, block_m))
    return loss, stats


def forward(query, keys, temperature, query_ids, key_ids, soft_query, soft_keys, alpha, normalize, rows, columns):
    soft = soft_query is not None and alpha > 0
    q, k = FeatureSide(query, query_ids, soft_query, normalize), FeatureSide(keys, key_ids, soft_keys, normalize)
    inv_tau = (1.0 / temperature.float()).reshape(1)
    empty = query.new_empty(0, dtype=torch.float32), query.new_empty((3, 0), dtype=torch.float32)
    has_ids = query_ids is not None
    row = _side_stats(q, k, inv_tau, alpha, has_ids, soft) if rows else empty
    column = _side_stats(k, q, inv_tau, alpha, has_ids, soft) if columns else empty
    return row[0], column[0], row[1], column[1]


def _side_grad(a, b, inv_tau, alpha, g_a, stats_a, g_b, stats_b, want_grad, normalize, has_ids, soft):
    grad = torch.empty_like(a.x) if want_grad else a.x
    r = torch.empty(a.n, device=a.x.device, dtype=torch.float32)
    placeholder = r
    block_d = max(16, triton.next_power_of_2(a.d))
    block_m = grad_block_m(a.x.dtype, block_d)
    _grad_kernel[(triton.cdiv(a.n, block_m),)](
        *_pairwise(a, b), inv_tau, placeholder if g_a is None else g_a,
        placeholder if g_a is None else stats_a.contiguous(), placeholder if g_b is None else g_b,
        placeholder if g_b is None else stats_b.contiguous(), grad, r, a.n, b.n, a.d, a.soft.shape[1],
        float(alpha), ROWS=g_a is not None, COLS=g_b is not None, WANT_GRAD=want_grad, NORMALIZE=bool(normalize),
        BLOCK_D=block_d, **_meta(a, has_ids, soft, block_m))
    return (grad if want_grad else None), r


def backward(grad_row_loss, grad_column_loss, query, keys, temperature, query_ids, key_ids, soft_query, soft_keys,
             alpha, normalize, row_stats, column_stats, query_grad, keys_grad, temperature_grad):
    soft = soft_query is not None and alpha > 0
    q, k = FeatureSide(query, query_ids, soft_query, normalize), FeatureSide(keys, key_ids, soft_keys, normalize)
    inv_tau = (1.0 / temperature.float()).reshape(1)
    g_row = grad_row_loss.float().contiguous() if grad_row_loss is not None and row_stats.shape[1] else None
    g_col = grad_column_loss.float().contiguous() if grad_column_loss is not None and column_stats.shape[1] else None
    has_ids = query_ids is not None
    grad_q = grad_k = r = None
    if query_grad or temperature_grad:
        grad_q, r = _side_grad(q, k, inv_tau, alpha, g_row, row_stats, g_col, column_stats, query_grad, normalize,
                               has_ids, soft)
    if keys_grad:
        grad_k, r_keys = _side_grad(k, q, inv_tau, alpha, g_col, column_stats, g_row, row_stats, True, normalize,
                                    has_ids, soft)
        r = r_keys if r is None else r
    grad_tau = (-r.sum() * inv_tau[0]).to(temperature.dtype) if temperature_grad else temperature.new_empty(0)
    return (grad_q if grad_q is not None else query.new_empty(0), grad_k if grad_k is not None else keys.new_empty(0),
            grad_tau)
