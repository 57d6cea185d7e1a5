"""Shared by the Triton kernels of every op: the activations and their derivatives, in float32.

ACTIVATION_IDS maps the op contracts' activation names to the ACT constexpr of activation_and_slope.
"""

from __future__ import annotations

import triton
import triton.language as tl

ACTIVATION_IDS = {"gelu": 0, "gelu_tanh": 1, "relu": 2, "silu": 3}
# Globals read inside @triton.jit must be constexpr.
SQRT_HALF = tl.constexpr(0.7071067811865476)
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)
SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)
GELU_TANH_CUBIC = tl.constexpr(0.044715)


@triton.jit
def tanh(x):
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def activation_and_slope(z, ACT: tl.constexpr):
    """(act(z), act'(z)); ACT is resolved at compile time, so one branch is compiled."""
    if ACT == 0:
        cdf = 0.5 * (1.0 + tl.math.erf(z * SQRT_HALF))
        value = z * cdf
        slope = cdf + z * tl.exp(-0.5 * z * z) * INV_SQRT_2PI
    elif ACT == 1:
        # Tensors lead each product: constexpr * tensor fails in the interpreter.
        t = tanh((z + z * z * z * GELU_TANH_CUBIC) * SQRT_2_OVER_PI)
        value = 0.5 * z * (1.0 + t)
        slope = 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + z * z * (3.0 * GELU_TANH_CUBIC))
    elif ACT == 2:
        value = tl.maximum(z, 0.0)
        slope = tl.where(z > 0.0, 1.0, 0.0)
    else:
        s = 1.0 / (1.0 + tl.exp(-z))
        value = z * s
        slope = s * (1.0 + z * (1.0 - s))
    return value, slope
