"""The adapter op's triton backend: forward and backward, by the one-kernel path (adapter_fused.py) where r fits in
registers (r <= 512), else by the Triton kernels here of the fused middle (norm + activation, forward and
backward) with the GEMMs by torch around them, as the torch backend's.

The middle's contract is the native kernels' (csrc/adapter/adapter.h, NormActForward): h is (rows, r) contiguous,
math in float32 (every load is upcast at once), statistics in float32. A program owns a block of rows
and all r columns; parameter grads are reduced per program, then across programs by the parallel, fixed-order
column sums of kernels/column_sums.py, so they are deterministic.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..ops.adapter import torch_backend
from . import adapter_fused, column_sums
from .common import ACTIVATION_IDS
from .norm_act import norm_act_rows, norm_act_rows_backward, norm_params


@triton.jit
def _forward_kernel(H, W, B, A, MEAN, RSTD, rows, r, eps, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                    LAYERNORM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_r = tl.arange(0, BLOCK_R)
    mask_m = offs_m < rows
    mask_r = offs_r < r
    mask = mask_m[:, None] & mask_r[None, :]
    offsets = offs_m[:, None] * r + offs_r[None, :]
    h = tl.load(H + offsets, mask=mask, other=0.0).to(tl.float32)
    w, b = norm_params(W, B, offs_r, mask_r, HAS_BIAS, BLOCK_R)
    a, mean, rstd = norm_act_rows(h, mask, w, b, r, eps, ACT, LAYERNORM, BLOCK_M)
    tl.store(A + offsets, a.to(A.dtype.element_ty), mask=mask)
    tl.store(MEAN + offs_m, mean, mask=mask_m)
    tl.store(RSTD + offs_m, rstd, mask=mask_m)


@triton.jit
def _backward_kernel(GA, H, MEAN, RSTD, W, B, A, GH, PARTIAL, rows, r, rows_per_program,
                     HAS_BIAS: tl.constexpr, ACT: tl.constexpr, LAYERNORM: tl.constexpr,
                     BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr):
    pid = tl.program_id(0)
    offs_r = tl.arange(0, BLOCK_R)
    mask_r = offs_r < r
    w, b = norm_params(W, B, offs_r, mask_r, HAS_BIAS, BLOCK_R)
    acc_w = tl.zeros((BLOCK_R,), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_R,), dtype=tl.float32)
    acc_h = tl.zeros((BLOCK_R,), dtype=tl.float32)
    start = pid * rows_per_program
    for first in range(start, start + rows_per_program, BLOCK_M):
        offs_m = first + tl.arange(0, BLOCK_M)
        mask_m = offs_m < rows
        mask = mask_m[:, None] & mask_r[None, :]
        offsets = offs_m[:, None] * r + offs_r[None, :]
        h = tl.load(H + offsets, mask=mask, other=0.0).to(tl.float32)
        grad_a = tl.load(GA + offsets, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + offs_m, mask=mask_m, other=0.0)
        rstd = tl.load(RSTD + offs_m, mask=mask_m, other=0.0)
        a, grad_z, xhat, grad_h = norm_act_rows_backward(grad_a, h, mean, rstd, w, b, mask, r, ACT, LAYERNORM)
        acc_w += tl.sum(grad_z * xhat, axis=0)
        acc_b += tl.sum(grad_z, axis=0)
        acc_h += tl.sum(grad_h, axis=0)
        tl.store(A + offsets, a.to(A.dtype.element_ty), mask=mask)
        tl.store(GH + offsets, grad_h.to(GH.dtype.element_ty), mask=mask)
    out = PARTIAL + pid * 3 * r + offs_r
    tl.store(out, acc_w, mask=mask_r)
    tl.store(out + r, acc_b, mask=mask_r)
    tl.store(out + 2 * r, acc_h, mask=mask_r)


# Elements of a block's tile per thread: at 32 the backward spilled registers for wide rows; at 8 nothing spills
# and several times the warps fit on an SM (benchmarks/results/notes/cpu-2026-11-28/triton-registers.md;
# tests/test_triton_compile.py fails on a spill).
ELEMENTS_PER_THREAD = 8


def row_blocks(r: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_R, num_warps) of the forward and backward kernels for rows of r elements: whole rows
    (BLOCK_R = r rounded up to a power of two), 4 warps, or up to 16 where a row alone needs more, and as
    many rows (up to 64) as give each thread ELEMENTS_PER_THREAD."""
    block_r = triton.next_power_of_2(r)
    num_warps = min(16, max(4, block_r // (32 * ELEMENTS_PER_THREAD)))
    return max(1, min(64, num_warps * 32 * ELEMENTS_PER_THREAD // block_r)), block_r, num_warps


def _contiguous_params(weight, bias):
    return weight.contiguous(), None if bias is None else bias.contiguous()


def _check(h, weight, bias):
    if h.dim() != 2 or not h.is_contiguous():
        raise ValueError(f"fastadapter triton: h must be a contiguous 2-D tensor, got shape {tuple(h.shape)}")
    r = h.shape[1]
    for name, t in (("norm weight", weight), ("norm bias", bias)):
        if t is not None and tuple(t.shape) != (r,):
            raise ValueError(f"fastadapter triton: {name} must have shape ({r},), got {tuple(t.shape)}")


def norm_act_forward(h, weight, bias, activation: str, norm: str, eps: float):
    _check(h, weight, bias)
    weight, bias = _contiguous_params(weight, bias)  # the kernels index them densely
    rows, r = h.shape
    a = torch.empty_like(h)
    mean = torch.empty(rows, device=h.device, dtype=torch.float32)
    rstd = torch.empty_like(mean)
    if rows:
        block_m, block_r, num_warps = row_blocks(r)
        _forward_kernel[(triton.cdiv(rows, block_m),)](
            h, weight, bias if bias is not None else weight, a, mean, rstd, rows, r, eps, HAS_BIAS=bias is not None,
            ACT=ACTIVATION_IDS[activation], LAYERNORM=norm == "layernorm", BLOCK_M=block_m, BLOCK_R=block_r,
            num_warps=num_warps)
    return a, mean, rstd


def norm_act_backward(grad_a, h, mean, rstd, weight, bias, activation: str, norm: str):
    _check(h, weight, bias)
    weight, bias = _contiguous_params(weight, bias)  # the kernels index them densely
    rows, r = h.shape
    grad_a = grad_a.contiguous()
    a, grad_h = torch.empty_like(h), torch.empty_like(h)
    # No FMA contraction in backward: fused into `grad_xhat - mean_g`, the product grad_z * w would subtract
    # its unrounded value from the mean of its rounded values, and rstd amplifies that residual (a row of
    # near-zero variance, e.g. r = 1, got grad_h ~1e-5 where it is exactly 0; seen on an H200).
    block_m, block_r, num_warps = row_blocks(r)
    blocks = triton.cdiv(rows, block_m)
    programs = max(1, min(blocks, 4 * _processor_count(h.device)))
    rows_per_program = triton.cdiv(blocks, programs) * block_m
    # Three tensors, not rows of one: the op's outputs must not alias.
    grad_weight, grad_bias = torch.empty_like(weight), torch.empty_like(weight)
    grad_h_sum = torch.empty(r, device=h.device, dtype=h.dtype)
    if not rows:
        return a, grad_h, grad_weight.zero_(), grad_bias.zero_(), grad_h_sum.zero_()
    partial = torch.empty(programs, 3, r, device=h.device, dtype=torch.float32)  # every program writes its row
    _backward_kernel[(programs,)](
        grad_a, h, mean.contiguous(), rstd.contiguous(), weight, bias if bias is not None else weight, a, grad_h,
        partial, rows, r, rows_per_program, HAS_BIAS=bias is not None, ACT=ACTIVATION_IDS[activation],
        LAYERNORM=norm == "layernorm", BLOCK_M=block_m, BLOCK_R=block_r, num_warps=num_warps,
        enable_fp_fusion=False)
    column_sums.finish(partial.view(programs, 3 * r), r, grad_weight, grad_bias, grad_h_sum)
    return a, grad_h, grad_weight, grad_bias, grad_h_sum


def _processor_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # the interpreter: few programs, so each runs many rows


def forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps, recompute):
    """The adapter op's forward under its saved-for-backward contract: one kernel (adapter_fused.py) where r fits
    its registers, else cuBLAS GEMMs around the norm + activation kernel (fastadapter/ops/adapter/torch_backend.py)."""
    if adapter_fused.fits(x, w_down):
        return adapter_fused.forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps,
                                     recompute)
    return torch_backend.forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps,
                                 recompute, middle=norm_act_forward)


def backward(grad_y, x, h, mean, rstd, w_down, b_down, norm_weight, norm_bias, w_up, activation, norm, eps,
             recompute, input_grad):
    args = (grad_y, x, h, mean, rstd, w_down, b_down, norm_weight, norm_bias, w_up, activation, norm, eps, recompute,
            input_grad)
    if adapter_fused.fits(x, w_down):
        return adapter_fused.backward(*args)
    return torch_backend.backward(*args, middle=norm_act_backward)
