"""The adapter op from Python: the public function, the Python backends' kernels and every fake kernel.

The schemas live in csrc/ops.cpp (TORCH_LIBRARY); the orchestration and autograd shared by every backend in
csrc/adapter.cpp: the GEMMs are ATen's (bias and residual folded into them), and only the fused norm +
activation pass differs. Forward returns (y, h, mean, rstd); h (empty with recompute=True) and the float32
norm statistics are what backward needs, the saved-for-backward contract of every backend, so backends can
be mixed.
"""

from __future__ import annotations

import torch

from . import _C  # registers the schemas and the native kernels
from . import reference
from .backends import resolve_backend

_lib = torch.library.Library("fastadapter", "FRAGMENT")
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _norm_act_forward_py(h, weight, bias, activation, norm, eps, backend):
    if backend == "triton":
        from .kernels import adapter as triton_adapter

        return triton_adapter.norm_act_forward(h, weight, bias, activation, norm, eps)
    return reference.norm_act_forward(h, weight, bias, activation, norm, eps)


def _norm_act_backward_py(grad_a, h, mean, rstd, weight, bias, activation, norm, eps, backend):
    if backend == "triton":
        from .kernels import adapter as triton_adapter

        return triton_adapter.norm_act_backward(grad_a, h, mean, rstd, weight, bias, activation, norm)
    return reference.norm_act_backward(grad_a, h, mean, rstd, weight, bias, activation, norm)


_lib.impl("norm_act_forward_py", _norm_act_forward_py, "CompositeExplicitAutograd")
_lib.impl("norm_act_backward_py", _norm_act_backward_py, "CompositeExplicitAutograd")


@torch.library.register_fake("fastadapter::adapter_forward")
def _adapter_forward_fake(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps, recompute,
                          backend):
    lead = x.shape[:-1]
    h = x.new_empty(0) if recompute else x.new_empty((*lead, w_down.shape[0]))
    stats = x.new_empty(lead, dtype=torch.float32)
    return x.new_empty(x.shape), h, stats, stats.new_empty(lead)


@torch.library.register_fake("fastadapter::adapter_backward")
def _adapter_backward_fake(grad_y, x, h, mean, rstd, w_down, b_down, norm_weight, norm_bias, w_up, activation, norm,
                           eps, recompute, input_grad, backend):
    r = w_down.shape[0]
    return (x.new_empty(x.shape) if input_grad else x.new_empty(0), w_down.new_empty(w_down.shape),
            w_down.new_empty(r), norm_weight.new_empty(r), norm_weight.new_empty(r), w_up.new_empty(w_up.shape),
            w_up.new_empty(w_up.shape[0]))


@torch.library.register_fake("fastadapter::norm_act_forward")
def _norm_act_forward_fake(h, weight, bias, activation, norm, eps):
    stats = h.new_empty(h.shape[0], dtype=torch.float32)
    return h.new_empty(h.shape), stats, stats.new_empty(h.shape[0])


@torch.library.register_fake("fastadapter::norm_act_backward")
def _norm_act_backward_fake(grad_a, h, mean, rstd, weight, bias, activation, norm):
    r = h.shape[1]
    return h.new_empty(h.shape), h.new_empty(h.shape), weight.new_empty(r), weight.new_empty(r), h.new_empty(r)


@torch.library.register_fake("fastadapter::norm_act_forward_py")
def _norm_act_forward_py_fake(h, weight, bias, activation, norm, eps, backend):
    return _norm_act_forward_fake(h, weight, bias, activation, norm, eps)


@torch.library.register_fake("fastadapter::norm_act_backward_py")
def _norm_act_backward_py_fake(grad_a, h, mean, rstd, weight, bias, activation, norm, eps, backend):
    return _norm_act_backward_fake(grad_a, h, mean, rstd, weight, bias, activation, norm)


def check_adapter_inputs(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps):
    """Raises a clear error naming the first bad argument, before any work."""
    tensors = {"x": x, "w_down": w_down, "b_down": b_down, "norm_weight": norm_weight, "norm_bias": norm_bias,
               "w_up": w_up, "b_up": b_up}
    for name, t in tensors.items():
        if t is None and name in ("b_down", "norm_bias", "b_up"):
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"fastadapter.adapter: {name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"fastadapter.adapter: {name} must be a floating-point tensor, got {t.dtype}")
        if t.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"fastadapter.adapter: {name} is {t.dtype}; supported dtypes are float32, bfloat16 and "
                            "float16 (the kernels compute in float32; use fastadapter.reference for float64)")
        if t.dtype != x.dtype:
            raise TypeError(f"fastadapter.adapter: dtype mismatch: x is {x.dtype} but {name} is {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"fastadapter.adapter: device mismatch: x is on {x.device} but {name} is on {t.device}")
    if x.dim() == 0:
        raise ValueError("fastadapter.adapter: x must have shape (..., D), got a 0-d tensor")
    width = x.shape[-1]
    if w_down.dim() != 2 or w_down.shape[1] != width:
        raise ValueError(f"fastadapter.adapter: w_down must have shape (r, D={width}), got {tuple(w_down.shape)}")
    r = w_down.shape[0]
    if r == 0:
        raise ValueError("fastadapter.adapter: the bottleneck size must be at least 1 (w_down has 0 rows)")
    expected = {"b_down": (r,), "norm_weight": (r,), "norm_bias": (r,), "w_up": (width, r), "b_up": (width,)}
    for name, shape in expected.items():
        t = tensors[name]
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"fastadapter.adapter: {name} must have shape {shape} (D={width}, r={r}), "
                             f"got {tuple(t.shape)}")
    if activation not in reference.ACTIVATIONS:
        raise ValueError(f"fastadapter.adapter: unknown activation {activation!r}; expected one of "
                         f"{reference.ACTIVATIONS}")
    if norm not in reference.NORMS:
        raise ValueError(f"fastadapter.adapter: unknown norm {norm!r}; expected one of {reference.NORMS}")
    if not eps > 0:
        raise ValueError(f"fastadapter.adapter: eps must be positive, got {eps}")


def adapter(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation="gelu", norm="layernorm", eps=1e-5,
            backend="auto", recompute=False):
    """y = x + w_up @ act(norm(w_down @ x + b_down)) + b_up over the last dimension of x, fused.

    x: (..., D); w_down: (r, D); b_down, norm_weight, norm_bias: (r,); w_up: (D, r); b_up: (D,). Biases may
    be None. backend: "auto" | "cpu" | "cuda" | "triton" | "eager". recompute=True saves only x and the
    norm statistics for backward and recomputes h = w_down @ x + b_down there.
    """
    check_adapter_inputs(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps)
    backend = resolve_backend(backend, x.device)
    if not torch.is_grad_enabled() or not any(
            t is not None and t.requires_grad for t in (x, w_down, b_down, norm_weight, norm_bias, w_up, b_up)):
        recompute = True  # nothing will be saved, so h is only a temporary
    return torch.ops.fastadapter.adapter_forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation,
                                                 norm, float(eps), bool(recompute), backend)[0]


def release_cpu_cache() -> int:
    """Frees the CPU memory the adapter op keeps cached for reuse; returns the bytes freed.

    On CPU the op takes its tensors of 2 MiB and more (outputs, saved h, temporaries) from a small caching
    allocator: 2 MiB-aligned blocks advised for transparent huge pages, kept after they are freed (up to
    FASTADAPTER_CPU_CACHE_MB, default 512; 0 turns caching off) and handed out again for a request they
    fit without wasting more than half of themselves, because fresh multi-megabyte memory faults once per 4 KiB page on first touch.
    """
    return _C.release_cpu_cache()
