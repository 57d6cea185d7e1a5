"""The ITM ops' triton backend (contract: csrc/itm/itm.h; math: fastadapter/ops/itm/torch_backend.py). Each kernel
is a program per block of one side's rows walking the other side in tiles, with the contrastive kernels' tile of
similarities (`logits_tile`: tl.dot over the width in chunks, scaled by the inverse norms) and positives:

- `_margin_rows_kernel`: row_loss_i = sum_j y_ij (1 - s_ij) + (1 - y_ij) max(0, s_ij - m);
- `_margin_grad_kernel`: dS = w (-y + (1 - y) [s > m]), U = sum_j dS_ij b_hat_j in registers, R = sum_j dS S,
  then grad = (U - R a_hat) / |a|; the texts' grad is the same kernel on the swapped sides, the weight per column;
- `_negatives_kernel`: a running argmax per row of s / tau + G over the non-positive columns, G Gumbel noise from
  Philox keyed by (seed, column, row): the draw does not depend on the launch's shape.

Everything accumulates in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from fastadapter.kernels.contrastive import (
    BLOCK_K,
    BLOCK_M,
    BLOCK_N,
    NUM_WARPS,
    PRECISION,
    FeatureSide,
    grad_block_m,
    logits_tile,
    positive_pairs,
)

TINY = tl.constexpr(1.1754943508222875e-38)  # the smallest normal float32: log(0) never happens


@triton.jit
def _margin_rows_kernel(a_ptr, b_ptr, a_inv_ptr, b_inv_ptr, ids_a_ptr, ids_b_ptr, loss_ptr, n_a, n_b, d, margin,
                        HAS_IDS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_a
    a_inv = tl.load(a_inv_ptr + rows, mask=row_ok, other=1.0)
    loss = tl.zeros((BLOCK_M,), tl.float32)
    for b0 in range(0, n_b, BLOCK_N):
        cols = b0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_b
        s, _ = logits_tile(a_ptr, rows, row_ok, a_inv, b_ptr, b_inv_ptr, cols, col_ok, d, PRECISION, BLOCK_M,
                           BLOCK_N, BLOCK_K)
        p = positive_pairs(rows, cols, row_ok, col_ok, ids_a_ptr, ids_b_ptr, HAS_IDS)
        term = tl.where(p, 1.0 - s, tl.maximum(s - margin, 0.0))
        loss += tl.sum(tl.where(row_ok[:, None] & col_ok[None, :], term, 0.0), 1)
    tl.store(loss_ptr + rows, loss, mask=row_ok)


@triton.jit
def _margin_grad_kernel(a_ptr, b_ptr, a_inv_ptr, b_inv_ptr, ids_a_ptr, ids_b_ptr, w_ptr, grad_ptr, n_a, n_b, d,
                        margin, W_ON_ROWS: tl.constexpr, HAS_IDS: tl.constexpr, NORMALIZE: tl.constexpr,
                        PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_a
    dims = tl.arange(0, BLOCK_D)
    a_inv = tl.load(a_inv_ptr + rows, mask=row_ok, other=1.0)
    u = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    r = tl.zeros((BLOCK_M,), tl.float32)
    for b0 in range(0, n_b, BLOCK_N):
        cols = b0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_b
        s, b_inv = logits_tile(a_ptr, rows, row_ok, a_inv, b_ptr, b_inv_ptr, cols, col_ok, d, PRECISION, BLOCK_M,
                               BLOCK_N, BLOCK_K)
        p = positive_pairs(rows, cols, row_ok, col_ok, ids_a_ptr, ids_b_ptr, HAS_IDS)
        if W_ON_ROWS:
            w = tl.load(w_ptr + rows, mask=row_ok, other=0.0)[:, None] + tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        else:
            w = tl.load(w_ptr + cols, mask=col_ok, other=0.0)[None, :] + tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
        ds = tl.where(p, -w, tl.where(s > margin, w, 0.0))
        ds = tl.where(row_ok[:, None] & col_ok[None, :], ds, 0.0)
        r += tl.sum(ds * s, 1)
        b = tl.load(b_ptr + cols[:, None] * d + dims[None, :], mask=col_ok[:, None] & (dims[None, :] < d), other=0.0)
        u += tl.dot((ds * b_inv[None, :]).to(b.dtype), b, input_precision=PRECISION)
    grad = u
    if NORMALIZE:
        a = tl.load(a_ptr + rows[:, None] * d + dims[None, :], mask=row_ok[:, None] & (dims[None, :] < d), other=0.0)
        grad = (u - r[:, None] * a.to(tl.float32) * a_inv[:, None]) * a_inv[:, None]
    tl.store(grad_ptr + rows[:, None] * d + dims[None, :], grad.to(grad_ptr.dtype.element_ty),
             mask=row_ok[:, None] & (dims[None, :] < d))


@triton.jit
def _negatives_kernel(a_ptr, b_ptr, ones_ptr, ids_a_ptr, ids_b_ptr, inv_tau_ptr, index_ptr, n_a, n_b, d, seed,
                      HAS_IDS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < n_a
    scale = tl.zeros((BLOCK_M,), tl.float32) + tl.load(inv_tau_ptr)
    best = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    best_index = tl.full((BLOCK_M,), -1, tl.int32)  # int32 in the loop: registers
    for b0 in range(0, n_b, BLOCK_N):
        cols = b0 + tl.arange(0, BLOCK_N)
        col_ok = cols < n_b
        s, _ = logits_tile(a_ptr, rows, row_ok, scale, b_ptr, ones_ptr, cols, col_ok, d, PRECISION, BLOCK_M,
                           BLOCK_N, BLOCK_K)
        p = positive_pairs(rows, cols, row_ok, col_ok, ids_a_ptr, ids_b_ptr, HAS_IDS)
        c0 = (cols[None, :] + tl.zeros((BLOCK_M, BLOCK_N), tl.int32)).to(tl.uint32)
        c1 = (rows[:, None] + tl.zeros((BLOCK_M, BLOCK_N), tl.int32)).to(tl.uint32)
        bits, _, _, _ = tl.philox(seed, c0, c1, c1 * 0, c1 * 0)
        u = tl.maximum(tl.uint_to_uniform_float(bits), TINY)
        score = s - tl.log(-tl.log(u))
        score = tl.where(p | ~(row_ok[:, None] & col_ok[None, :]), float("-inf"), score)
        tile_best = tl.max(score, 1)
        tile_index = tl.argmax(score, 1).to(tl.int32) + b0  # the first of equal maxima
        better = tile_best > best  # strict: the lowest index wins a tie across tiles too; -inf never wins
        best = tl.where(better, tile_best, best)
        best_index = tl.where(better, tile_index, best_index)
    tl.store(index_ptr + rows, best_index.to(tl.int64), mask=row_ok)


def _meta(has_ids, block_m=BLOCK_M, num_warps=NUM_WARPS):
    return dict(HAS_IDS=has_ids, PRECISION=PRECISION, BLOCK_M=block_m, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
                num_warps=num_warps)


def margin_rows_launch(dtype):
    """(rows per program, warps) of the margin forward: float32's FMA dots keep 32 rows in registers on sm_90 but
    spill on sm_80, 16 rows on 4 warps on both (tests/test_triton_compile_losses.py)."""
    return (BLOCK_M // 2, NUM_WARPS // 2) if dtype == torch.float32 else (BLOCK_M, NUM_WARPS)


def margin_forward(image, text, image_ids, text_ids, margin, normalize):
    a, b = FeatureSide(image, image_ids, None, normalize), FeatureSide(text, text_ids, None, normalize)
    loss = torch.empty(a.n, device=a.x.device, dtype=torch.float32)
    block_m, num_warps = margin_rows_launch(a.x.dtype)
    _margin_rows_kernel[(triton.cdiv(a.n, block_m),)](a.x, b.x, a.inv, b.inv, a.ids, b.ids, loss, a.n, b.n, a.d,
                                                      float(margin), **_meta(image_ids is not None, block_m,
                                                                             num_warps))
    return loss


def _side_grad(a, b, w, w_on_rows, margin, normalize, has_ids):
    grad = torch.empty_like(a.x)
    block_d = max(16, triton.next_power_of_2(a.d))
    block_m = grad_block_m(a.x.dtype, block_d)
    _margin_grad_kernel[(triton.cdiv(a.n, block_m),)](
        a.x, b.x, a.inv, b.inv, a.ids, b.ids, w, grad, a.n, b.n, a.d, float(margin), W_ON_ROWS=w_on_rows,
        NORMALIZE=bool(normalize), BLOCK_D=block_d, **_meta(has_ids, block_m))
    return grad


def margin_backward(grad_row_loss, image, text, image_ids, text_ids, margin, normalize, image_grad, text_grad):
    a, b = FeatureSide(image, image_ids, None, normalize), FeatureSide(text, text_ids, None, normalize)
    w = grad_row_loss.float().contiguous()
    has_ids = image_ids is not None
    return (_side_grad(a, b, w, True, margin, normalize, has_ids) if image_grad else image.new_empty(0),
            _side_grad(b, a, w, False, margin, normalize, has_ids) if text_grad else text.new_empty(0))


def _draw(a, b, inv_tau, seed, has_ids):
    index = torch.empty(a.n, device=a.x.device, dtype=torch.int64)
    _negatives_kernel[(triton.cdiv(a.n, BLOCK_M),)](a.x, b.x, b.inv, a.ids, b.ids, inv_tau, index, a.n, b.n, a.d,
                                                    seed, **_meta(has_ids))
    return index


def sample(image, text, temperature, image_ids, text_ids, seed):
    a, b = FeatureSide(image, image_ids, None, False), FeatureSide(text, text_ids, None, False)
    inv_tau = (1.0 / temperature.float()).reshape(1)
    other_seed = (seed * 0x9E3779B97F4A7C15 + 1) % (1 << 62)  # the texts' draw: an unrelated Philox key
    has_ids = image_ids is not None
    return _draw(a, b, inv_tau, seed, has_ids), _draw(b, a, inv_tau, other_seed, has_ids)
