"""The adapter op from Python: the public function, the Python backends' kernels and every fake kernel.

The schemas live in csrc/ops.cpp (TORCH_LIBRARY), the input checks in csrc/checks.cpp (run by the op and by
its fake kernel here); the orchestration and autograd shared by every backend in csrc/adapter.cpp: the GEMMs
are ATen's (bias and residual folded into them), and only the fused norm + activation pass differs. Forward
returns (y, h, mean, rstd); h (empty with recompute=True) and the float32 norm statistics are what backward
needs, the saved-for-backward contract of every backend, so backends can be mixed.
"""

from __future__ import annotations

import torch

from . import _C  # registers the schemas and the native kernels
from . import reference
from .backends import resolve_backend

_lib = torch.library.Library("fastadapter", "FRAGMENT")


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
    _C.check_adapter_inputs(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps)
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


def adapter(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation="gelu", norm="layernorm", eps=1e-5,
            backend="auto", recompute=False):
    """y = x + w_up @ act(norm(w_down @ x + b_down)) + b_up over the last dimension of x, fused.

    x: (..., D); w_down: (r, D); b_down, norm_weight, norm_bias: (r,); w_up: (D, r); b_up: (D,). Biases may
    be None. backend: "auto" | "cpu" | "cuda" | "triton" | "eager". recompute=True saves only x and the
    norm statistics for backward and recomputes h = w_down @ x + b_down there. Under torch.autocast every
    floating input is first cast to the autocast dtype, as for F.linear (csrc/adapter.cpp).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"fastadapter.adapter: x must be a torch.Tensor, got {type(x).__name__}")
    backend = resolve_backend(backend, x.device)  # the op itself checks the inputs (csrc/checks.cpp)
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
