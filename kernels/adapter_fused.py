"""The whole adapter in Triton: one kernel for the forward, one row kernel for the backward (plus the two weight
GEMMs), under the op's saved-for-backward contract (csrc/adapter/adapter.h).

Forward, per block of BLOCK_M rows (all r columns in registers):
    h = x·W_downᵀ + b_down          tl.dot over D in BLOCK_D chunks, float32 accumulator, rounded to x's dtype
                                    (what the contract stores, and what the norm reads: as the torch backend)
    a = act(norm(h))                in registers, float32; mean and rstd stored per row
    y = x + a·W_upᵀ + b_up          D-chunk by D-chunk, a as the dot's left operand; y written once
Backward, per block of rows:
    ga = gy·W_up                    tl.dot over D chunks
    recompute a and act' from h (or h from x when the forward did not store it), norm backward in registers
    gx = gy + gh·W_down             D-chunk by D-chunk, written once
    the block's column sums of gz·x̂, gz, gh and gy (the norm weight's, norm bias's, b_down's and b_up's grads) as
    its row of partial sums, which one more launch sums over the blocks (kernels/column_sums.py)
then grad_W_down = ghᵀ·x and grad_W_up = gyᵀ·a are cuBLAS GEMMs on the stored gh and a (Triton's split-K would
need a reduction of its own; cuBLAS already runs these shapes near peak): four launches in all.

Sizes: r up to MAX_R = 256 (the float32 tiles of BLOCK_M × BLOCK_R must stay in registers: the block table
below); above that forward and backward take the two-kernel path (kernels/adapter.py), which keeps h in global
memory. float32 inputs use IEEE float32 dots (TF32, Triton's
default on a GPU, would miss the tests' float32 tolerance); bf16 and fp16 use tensor cores with float32
accumulation.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from . import column_sums
from .common import ACTIVATION_IDS
from .norm_act import norm_act_rows, norm_act_rows_backward, norm_params

MAX_R = 256  # above it, the h tile does not fit in registers (FORWARD_BLOCKS below)


@triton.jit
def _row_block(pid, rows, r, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr):
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, BLOCK_R)
    return offs_m, offs_r, offs_m < rows, offs_r < r


@triton.jit
def _down(X, WD, BD, offs_m, offs_r, mask_m, mask_r, D, r, HAS_BD: tl.constexpr, BLOCK_M: tl.constexpr,
          BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    """h = x·W_downᵀ + b_down for the block, rounded to x's dtype, returned in float32."""
    acc = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        x = tl.load(X + offs_m[:, None] * D + offs_d[None, :], mask=mask_m[:, None] & mask_d[None, :], other=0.0)
        w = tl.load(WD + offs_r[None, :] * D + offs_d[:, None], mask=mask_d[:, None] & mask_r[None, :], other=0.0)
        acc = tl.dot(x, w, acc, input_precision=PRECISION)
    if HAS_BD:
        acc += tl.load(BD + offs_r, mask=mask_r, other=0.0).to(tl.float32)[None, :]
    return acc.to(X.dtype.element_ty).to(tl.float32)


@triton.jit
def _forward_kernel(X, WD, BD, NW, NB, WU, BU, Y, H, MEAN, RSTD, rows, D, r, eps, HAS_BD: tl.constexpr,
                    HAS_NB: tl.constexpr, HAS_BU: tl.constexpr, STORE_H: tl.constexpr, ACT: tl.constexpr,
                    LAYERNORM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
                    PRECISION: tl.constexpr):
    offs_m, offs_r, mask_m, mask_r = _row_block(tl.program_id(0), rows, r, BLOCK_M, BLOCK_R)
    mask = mask_m[:, None] & mask_r[None, :]
    h = _down(X, WD, BD, offs_m, offs_r, mask_m, mask_r, D, r, HAS_BD, BLOCK_M, BLOCK_R, BLOCK_D, PRECISION)
    if STORE_H:
        tl.store(H + offs_m[:, None] * r + offs_r[None, :], h.to(H.dtype.element_ty), mask=mask)
    w, b = norm_params(NW, NB, offs_r, mask_r, HAS_NB, BLOCK_R)
    a, mean, rstd = norm_act_rows(h, mask, w, b, r, eps, ACT, LAYERNORM, BLOCK_M)
    a = a.to(X.dtype.element_ty)  # the up-projection's left operand
    tl.store(MEAN + offs_m, mean, mask=mask_m)
    tl.store(RSTD + offs_m, rstd, mask=mask_m)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        wu = tl.load(WU + offs_d[None, :] * r + offs_r[:, None], mask=mask_r[:, None] & mask_d[None, :], other=0.0)
        out = tl.dot(a, wu, input_precision=PRECISION)
        tile = offs_m[:, None] * D + offs_d[None, :]
        mask_y = mask_m[:, None] & mask_d[None, :]
        out += tl.load(X + tile, mask=mask_y, other=0.0).to(tl.float32)
        if HAS_BU:
            out += tl.load(BU + offs_d, mask=mask_d, other=0.0).to(tl.float32)[None, :]
        tl.store(Y + tile, out.to(Y.dtype.element_ty), mask=mask_y)


@triton.jit
def _backward_kernel(GY, X, H, MEAN, RSTD, WD, BD, NW, NB, WU, GX, GH, A, PARTIAL, rows, D, r,
                     HAS_BD: tl.constexpr, HAS_NB: tl.constexpr, RECOMPUTE: tl.constexpr, INPUT_GRAD: tl.constexpr,
                     ACT: tl.constexpr, LAYERNORM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr,
                     BLOCK_D: tl.constexpr, PRECISION: tl.constexpr):
    pid = tl.program_id(0)
    offs_m, offs_r, mask_m, mask_r = _row_block(pid, rows, r, BLOCK_M, BLOCK_R)
    mask = mask_m[:, None] & mask_r[None, :]
    sums = PARTIAL + pid * (3 * r + D)  # this block's row of partial sums: gz·x̂, gz, gh, then gy
    grad_a = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        gy = tl.load(GY + offs_m[:, None] * D + offs_d[None, :], mask=mask_m[:, None] & mask_d[None, :], other=0.0)
        wu = tl.load(WU + offs_d[:, None] * r + offs_r[None, :], mask=mask_d[:, None] & mask_r[None, :], other=0.0)
        grad_a = tl.dot(gy, wu, grad_a, input_precision=PRECISION)
        tl.store(sums + 3 * r + offs_d, tl.sum(gy.to(tl.float32), axis=0), mask=mask_d)  # b_up's grad
    if RECOMPUTE:
        h = _down(X, WD, BD, offs_m, offs_r, mask_m, mask_r, D, r, HAS_BD, BLOCK_M, BLOCK_R, BLOCK_D, PRECISION)
    else:
        h = tl.load(H + offs_m[:, None] * r + offs_r[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(MEAN + offs_m, mask=mask_m, other=0.0)
    rstd = tl.load(RSTD + offs_m, mask=mask_m, other=0.0)
    w, b = norm_params(NW, NB, offs_r, mask_r, HAS_NB, BLOCK_R)
    a, grad_z, xhat, grad_h = norm_act_rows_backward(grad_a, h, mean, rstd, w, b, mask, r, ACT, LAYERNORM)
    tl.store(sums + offs_r, tl.sum(grad_z * xhat, axis=0), mask=mask_r)
    tl.store(sums + r + offs_r, tl.sum(grad_z, axis=0), mask=mask_r)
    tl.store(sums + 2 * r + offs_r, tl.sum(grad_h, axis=0), mask=mask_r)
    tile_r = offs_m[:, None] * r + offs_r[None, :]
    tl.store(A + tile_r, a.to(A.dtype.element_ty), mask=mask)
    grad_h = grad_h.to(GH.dtype.element_ty)
    tl.store(GH + tile_r, grad_h, mask=mask)
    if INPUT_GRAD:
        for d0 in range(0, D, BLOCK_D):
            offs_d = d0 + tl.arange(0, BLOCK_D)
            mask_d = offs_d < D
            wd = tl.load(WD + offs_r[:, None] * D + offs_d[None, :], mask=mask_r[:, None] & mask_d[None, :],
                         other=0.0)
            tile = offs_m[:, None] * D + offs_d[None, :]
            mask_x = mask_m[:, None] & mask_d[None, :]
            out = tl.dot(grad_h, wd, input_precision=PRECISION)
            out += tl.load(GY + tile, mask=mask_x, other=0.0).to(tl.float32)
            tl.store(GX + tile, out.to(GX.dtype.element_ty), mask=mask_x)


# (BLOCK_M, num_warps, BLOCK_D, num_stages) by BLOCK_R, for 16-bit and float32 inputs: the largest row blocks that
# compile for sm_90 with no register spill (tests/test_triton_compile_adapter_fused.py checks every one; searched
# with ptxas, not yet timed on a GPU). The forward holds about three (BLOCK_M, BLOCK_R) float32 tiles at once,
# the backward about five, which is why its row blocks are smaller; BLOCK_M >= 64 on 4 warps per warpgroup lets the
# forward's 16-bit dots use Hopper's wgmma (HGMMA), the backward's run on mma.sync (HMMA). At BLOCK_R = 512 every
# configuration tried spilled, in both kernels: hence MAX_R.
FORWARD_BLOCKS = {False: {16: (64, 4, 32, 2), 64: (64, 4, 32, 2), 128: (64, 8, 32, 2), 256: (64, 8, 32, 2)},
                  True: {block_r: (32, 8, 16, 2) for block_r in (16, 64, 128, 256)}}
BACKWARD_BLOCKS = {False: {16: (32, 4, 32, 2), 64: (16, 4, 16, 2), 128: (16, 8, 16, 2), 256: (16, 8, 16, 2)},
                   True: {16: (16, 8, 16, 2), 64: (16, 8, 16, 2), 128: (16, 8, 16, 2), 256: (16, 8, 16, 1)}}


def block_r(r: int) -> int:
    """r rounded up to the block sizes tabled (tl.dot needs every dimension >= 16): 16, 64, 128 or 256."""
    return 16 if r <= 16 else max(64, triton.next_power_of_2(r))


@functools.cache
def blocks(r: int, width: int, dtype: torch.dtype, backward: bool = False) -> tuple[int, int, int, int, int]:
    """(BLOCK_M, BLOCK_R, BLOCK_D, num_warps, num_stages) of the forward (or backward) kernel."""
    rounded = block_r(r)
    block_m, num_warps, block_d, num_stages = (BACKWARD_BLOCKS if backward else FORWARD_BLOCKS)[
        dtype == torch.float32][rounded]
    return block_m, rounded, min(block_d, max(16, triton.next_power_of_2(width))), num_warps, num_stages


def fits(x: torch.Tensor, w_down: torch.Tensor) -> bool:
    return w_down.shape[0] <= MAX_R


def _dense(*tensors):
    """The kernels index every parameter densely (a strided view is copied; a dense one costs nothing)."""
    return [None if t is None else t.contiguous() for t in tensors]


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # "tf32" is ignored for 16-bit operands


def forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps, recompute):
    width, r = x.shape[-1], w_down.shape[0]
    x2 = x.reshape(-1, width).contiguous()
    rows = x2.shape[0]
    y = torch.empty_like(x2)
    h = x2.new_empty(0 if recompute else (rows, r))
    mean = torch.empty(rows, device=x.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if rows:
        block_m, rounded, block_d, num_warps, num_stages = blocks(r, width, x.dtype)
        w_down, b_down, norm_weight, norm_bias, w_up, b_up = _dense(w_down, b_down, norm_weight, norm_bias, w_up, b_up)
        _forward_kernel[(triton.cdiv(rows, block_m),)](
            x2, w_down, b_down if b_down is not None else w_down, norm_weight,
            norm_bias if norm_bias is not None else norm_weight, w_up, b_up if b_up is not None else w_up, y,
            h if not recompute else y, mean, rstd, rows, width, r, eps, HAS_BD=b_down is not None,
            HAS_NB=norm_bias is not None, HAS_BU=b_up is not None, STORE_H=not recompute,
            ACT=ACTIVATION_IDS[activation], LAYERNORM=norm == "layernorm", BLOCK_M=block_m, BLOCK_R=rounded,
            BLOCK_D=block_d, PRECISION=_precision(x.dtype), num_warps=num_warps, num_stages=num_stages)
    lead = x.shape[:-1]
    return y.view(x.shape), h if recompute else h.view(*lead, r), mean.view(lead), rstd.view(lead)


def backward(grad_y, x, h, mean, rstd, w_down, b_down, norm_weight, norm_bias, w_up, activation, norm, eps,
             recompute, input_grad):
    width, r = x.shape[-1], w_down.shape[0]
    gy, x2 = grad_y.reshape(-1, width).contiguous(), x.reshape(-1, width).contiguous()
    rows = x2.shape[0]
    grad_x = torch.empty_like(x2) if input_grad else x.new_empty(0)
    grad_h, a = x2.new_empty(rows, r), x2.new_empty(rows, r)
    if not rows:
        zeros = [t.new_zeros(t.shape) for t in (w_down, norm_weight, norm_weight, w_up)]
        return (grad_x.view(x.shape) if input_grad else grad_x, zeros[0], x.new_zeros(r), zeros[1], zeros[2],
                zeros[3], x.new_zeros(width))
    block_m, rounded, block_d, num_warps, num_stages = blocks(r, width, x.dtype, backward=True)
    programs = triton.cdiv(rows, block_m)
    partial = torch.empty(programs, 3 * r + width, device=x.device, dtype=torch.float32)  # every program its row
    w_down, b_down, norm_weight, norm_bias, w_up = _dense(w_down, b_down, norm_weight, norm_bias, w_up)
    # No FMA contraction, as in kernels/adapter.py's backward: a row of near-zero variance amplifies it.
    _backward_kernel[(programs,)](
        gy, x2, h.reshape(-1, r) if not recompute else x2, mean.reshape(-1), rstd.reshape(-1), w_down,
        b_down if b_down is not None else w_down, norm_weight, norm_bias if norm_bias is not None else norm_weight,
        w_up, grad_x if input_grad else gy, grad_h, a, partial, rows, width, r,
        HAS_BD=b_down is not None, HAS_NB=norm_bias is not None, RECOMPUTE=recompute, INPUT_GRAD=input_grad,
        ACT=ACTIVATION_IDS[activation], LAYERNORM=norm == "layernorm", BLOCK_M=block_m, BLOCK_R=rounded,
        BLOCK_D=block_d, PRECISION=_precision(x.dtype), num_warps=num_warps, num_stages=num_stages,
        enable_fp_fusion=False)
    grad_nw, grad_nb = torch.empty_like(norm_weight), torch.empty_like(norm_weight)
    grad_bd, grad_bu = x.new_empty(r), x.new_empty(width)
    column_sums.finish(partial, r, grad_nw, grad_nb, grad_bd, grad_bu)
    return (grad_x.view(x.shape) if input_grad else grad_x, grad_h.t() @ x2, grad_bd, grad_nw, grad_nb, gy.t() @ a,
            grad_bu)
