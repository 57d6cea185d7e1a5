"""The adapter backward's parameter sums, finished in one launch: the column sums of a (rows, C) float32 matrix of
partial sums (a row per program of a row kernel), cast into the grads they belong to.

Columns [0, r), [r, 2r), [2r, 3r) are the norm weight's, the norm bias's and b_down's grads; columns [3r, 3r + D),
where there are any, b_up's. A program owns BLOCK_C columns and adds the rows CHUNK at a time into a
(CHUNK, BLOCK_C) tile, then sums the tile: every column is a parallel, fixed-order reduction (deterministic for
a fixed shape), where a serial loop over hundreds of rows on a few programs was the backward's slowest tail.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_C = 32  # 3r + D = 1536 columns at r = 256, D = 768: 48 programs
CHUNK = 64  # rows per step: a (64, 32) float32 tile is 16 registers a thread on NUM_WARPS = 4
NUM_WARPS = 4


@triton.jit
def _column_sums_kernel(P, rows, columns, r, GRAD_W, GRAD_B, GRAD_H_SUM, GRAD_U, HAS_U: tl.constexpr,
                        BLOCK_C: tl.constexpr, CHUNK: tl.constexpr):
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < columns
    acc = tl.zeros((CHUNK, BLOCK_C), dtype=tl.float32)
    for first in range(0, rows, CHUNK):
        offs_p = first + tl.arange(0, CHUNK)
        acc += tl.load(P + offs_p[:, None] * columns + offs_c[None, :],
                       mask=(offs_p < rows)[:, None] & mask_c[None, :], other=0.0)
    total = tl.sum(acc, axis=0)
    which, col = offs_c // r, offs_c % r
    tl.store(GRAD_W + col, total.to(GRAD_W.dtype.element_ty), mask=mask_c & (which == 0))
    tl.store(GRAD_B + col, total.to(GRAD_B.dtype.element_ty), mask=mask_c & (which == 1))
    tl.store(GRAD_H_SUM + col, total.to(GRAD_H_SUM.dtype.element_ty), mask=mask_c & (which == 2))
    if HAS_U:
        tl.store(GRAD_U + offs_c - 3 * r, total.to(GRAD_U.dtype.element_ty), mask=mask_c & (offs_c >= 3 * r))


def finish(partial: torch.Tensor, r: int, grad_weight, grad_bias, grad_h_sum, grad_up=None) -> None:
    """Writes the column sums of partial (rows, 3r [+ D]) into the three r-sized grads (and grad_up, (D,))."""
    rows, columns = partial.shape
    if columns != 3 * r + (0 if grad_up is None else grad_up.numel()) or not partial.is_contiguous():
        raise ValueError(f"fastadapter triton: partial sums of shape {tuple(partial.shape)} do not match r = {r}")
    _column_sums_kernel[(triton.cdiv(columns, BLOCK_C),)](
        partial, rows, columns, r, grad_weight, grad_bias, grad_h_sum, grad_weight if grad_up is None else grad_up,
        HAS_U=grad_up is not None, BLOCK_C=BLOCK_C, CHUNK=CHUNK, num_warps=NUM_WARPS)
