"""The adapter's norm + activation over a tile of rows held in registers, forward and backward, in float32:
shared by the two-kernel path (kernels/adapter.py) and the whole-adapter kernels (kernels/adapter_fused.py).

Forward: x̂ = (h − mean)·rstd (mean = 0 for RMSNorm), z = x̂·w + b, a = act(z). Backward, from the saved
statistics: gz = ga·act'(z), gx̂ = gz·w, gh = rstd·(gx̂ − mean(gx̂) − x̂·mean(gx̂·x̂)) (no mean(gx̂) term for RMSNorm).
The tile's padded columns (outside `mask`) hold zeros in h and ga; every result is zero there.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import activation_and_slope


@triton.jit
def norm_params(W, B, offs_r, mask_r, HAS_B: tl.constexpr, BLOCK_R: tl.constexpr):
    """The norm's weight and bias as (BLOCK_R,) float32 (the bias zeros when there is none)."""
    w = tl.load(W + offs_r, mask=mask_r, other=0.0).to(tl.float32)
    b = tl.zeros((BLOCK_R,), dtype=tl.float32)
    if HAS_B:
        b = tl.load(B + offs_r, mask=mask_r, other=0.0).to(tl.float32)
    return w, b


@triton.jit
def norm_act_rows(h, mask, w, b, r, eps, ACT: tl.constexpr, LAYERNORM: tl.constexpr, BLOCK_M: tl.constexpr):
    """(a, mean, rstd) of a (BLOCK_M, BLOCK_R) tile; w and b are (BLOCK_R,) float32 (b zeros without a bias)."""
    if LAYERNORM:
        mean = tl.sum(h, axis=1) / r
        centred = tl.where(mask, h - mean[:, None], 0.0)
    else:
        mean = tl.zeros((BLOCK_M,), dtype=tl.float32)
        centred = h
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=1) / r + eps)
    a, _ = activation_and_slope(centred * rstd[:, None] * w[None, :] + b[None, :], ACT)
    return tl.where(mask, a, 0.0), mean, rstd


@triton.jit
def norm_act_rows_backward(grad_a, h, mean, rstd, w, b, mask, r, ACT: tl.constexpr, LAYERNORM: tl.constexpr):
    """(a, gz, x̂, gh) of a tile, recomputing a from h and the saved statistics."""
    xhat = tl.where(mask, (h - mean[:, None]) * rstd[:, None], 0.0)
    a, slope = activation_and_slope(xhat * w[None, :] + b[None, :], ACT)
    grad_z = tl.where(mask, grad_a * slope, 0.0)
    grad_xhat = grad_z * w[None, :]
    mean_gx = tl.sum(grad_xhat * xhat, axis=1) / r
    if LAYERNORM:
        grad_h = rstd[:, None] * (grad_xhat - (tl.sum(grad_xhat, axis=1) / r)[:, None] - xhat * mean_gx[:, None])
    else:
        grad_h = rstd[:, None] * (grad_xhat - xhat * mean_gx[:, None])
    return a, grad_z, xhat, tl.where(mask, grad_h, 0.0)
