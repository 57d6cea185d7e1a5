"""The adapter op: y = x + W_up · act(norm(W_down · x + b_down)) + b_up over the last dimension of x.

Where its pieces are:
- schema: csrc/adapter/schema.cpp; input checks: csrc/adapter/checks.cpp (also run by the fake kernel here);
- autograd, autocast and the dispatch to a backend: csrc/adapter/autograd.cpp (one Function for every backend);
- backends, each the op's whole forward and backward under one saved-for-backward contract
  (csrc/adapter/adapter.h): cpu (csrc/adapter/cpu), cuda (csrc/adapter/cuda), triton (kernels/adapter.py,
  kernels/adapter_fused.py),
  torch (torch_backend.py); eager is reference.py with autograd; registration.py registers the Python ones
  and the fake kernels;
- tests: tests/test_adapter_*.py; benchmarks: benchmarks/test_adapter.py, benchmarks/adapter_*.py.
"""

from __future__ import annotations

import torch

from ..registry import OpBackends, register
from . import reference, registration

TABLE = register(OpBackends(
    "adapter",
    implemented={"cpu": "C++ kernels, MKL GEMMs",
                 "cuda": "CUDA norm + activation kernels, cuBLASLt GEMMs with bias/residual epilogues",
                 "triton": "the whole adapter in Triton kernels (r <= 256), else norm + activation around cuBLAS",
                 "torch": "the op's contract in plain PyTorch (torch_backend.py)",
                 "eager": "the plain PyTorch adapter with autograd (reference.py)"},
    # GPU order for memory, not yet for speed (benchmarks/results/).
    auto={"cpu": ("cpu", "torch"), "cuda": ("cuda", "triton", "torch"), "other": ("torch",)}))
_REQUIRED = ("x", "w_down", "norm_weight", "w_up")


def _name_the_missing_tensor(*tensors):
    for name, value in zip(_REQUIRED, tensors):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"fastadapter.adapter: {name} must be a torch.Tensor, got "
                            f"{'None' if value is None else type(value).__name__}")


def adapter(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation="gelu", norm="layernorm", eps=1e-5,
            backend="auto", recompute=False):
    """y = x + w_up @ act(norm(w_down @ x + b_down)) + b_up over the last dimension of x, fused.

    x: (..., D); w_down: (r, D); b_down, norm_weight, norm_bias: (r,); w_up: (D, r); b_up: (D,). Biases may
    be None. backend: "auto" | "cpu" | "cuda" | "triton" | "torch" | "eager" (fastadapter.backends("adapter")).
    recompute=True saves only x and the norm statistics for backward and recomputes h = w_down @ x + b_down
    there. Under torch.autocast every floating input is first cast to the autocast dtype, as for F.linear.
    """
    if not isinstance(x, torch.Tensor) or w_down is None or norm_weight is None or w_up is None:
        _name_the_missing_tensor(x, w_down, norm_weight, w_up)  # the op checks the rest; a call pays these four
    backend = TABLE.resolve(backend, x.device)  # the op itself checks the inputs (csrc/adapter/checks.cpp)
    if backend == "eager":
        return reference.adapter(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation, norm, eps)
    if not torch.is_grad_enabled() or not any(
            t is not None and t.requires_grad for t in (x, w_down, b_down, norm_weight, norm_bias, w_up, b_up)):
        recompute = True  # nothing will be saved, so h is only a temporary
    return torch.ops.fastadapter.adapter_forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, activation,
                                                 norm, float(eps), bool(recompute), backend)[0]


__all__ = ["adapter", "reference", "registration", "TABLE"]
