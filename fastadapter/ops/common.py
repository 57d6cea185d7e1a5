"""Shared by every op's Python code: the activations of the op contracts, the CPU kernels' block cache, and the
lazy entry points of the Triton backends."""

from __future__ import annotations

import importlib
import math

import torch
import torch.nn.functional as F

from .. import _C

ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu")


def activate(z: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "gelu":
        return F.gelu(z)
    if activation == "gelu_tanh":
        return F.gelu(z, approximate="tanh")
    if activation == "relu":
        return F.relu(z)
    if activation == "silu":
        return F.silu(z)
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def activation_slope(z: torch.Tensor, activation: str) -> torch.Tensor:
    """act'(z), written out (no autograd), as the kernels compute it."""
    if activation == "gelu":
        return 0.5 * (1 + torch.erf(z * math.sqrt(0.5))) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    if activation == "gelu_tanh":
        c = math.sqrt(2 / math.pi)
        t = torch.tanh(c * (z + 0.044715 * z ** 3))
        return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * 0.044715 * z * z)
    if activation == "relu":
        return (z > 0).to(z.dtype)
    if activation == "silu":
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))
    raise ValueError(f"unknown activation {activation!r}; expected one of {ACTIVATIONS}")


def release_cpu_cache() -> int:
    """Frees the CPU memory the ops' CPU kernels keep cached for reuse; returns the bytes freed.

    On CPU the kernels take their tensors of 2 MiB and more (outputs, saved h, temporaries) from a small caching
    allocator: 2 MiB-aligned blocks advised for transparent huge pages, kept after they are freed (up to
    FASTADAPTER_CPU_CACHE_MB, default 512; 0 turns caching off) and handed out again for a request they fit
    without wasting more than half of themselves, because fresh multi-megabyte memory faults once per 4 KiB page
    on first touch.
    """
    return _C.release_cpu_cache()


def triton_entry(module: str, function: str):
    """fastadapter.kernels.<module>.<function> as a backend's callable that imports the module (and triton) only
    at its first call, so that importing fastadapter needs no triton."""

    def call(*args):
        return getattr(importlib.import_module(f"fastadapter.kernels.{module}"), function)(*args)

    call.__name__ = f"triton_{module}_{function}"
    return call
