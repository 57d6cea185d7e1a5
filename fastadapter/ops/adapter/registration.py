"""The adapter op's Python registrations: its backends written in Python (torch here, triton in kernels/), added
to the op's C++ table of implementations, and the fake kernels torch.compile traces with."""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from ... import _C
from . import torch_backend

CUDA_PACKED_ROWS_ENV = "FASTADAPTER_CUDA_PACKED_ROWS"


@functools.cache
def _triton():
    from ...kernels import adapter as triton_adapter  # imports triton only when the backend first runs

    return triton_adapter


def _triton_forward(*args):
    return _triton().forward(*args)


def _triton_backward(*args):
    return _triton().backward(*args)


_C.register_adapter_backend("torch", torch_backend.forward, torch_backend.backward)
_C.register_adapter_backend("triton", _triton_forward, _triton_backward)


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


def set_cuda_packed_rows(enabled: bool) -> None:
    """The cuda backend's row-in-registers kernels on or off from now on, in this process (the kernels read
    FASTADAPTER_CUDA_PACKED_ROWS once, at their first call) and in child processes (the variable)."""
    if enabled:
        os.environ[CUDA_PACKED_ROWS_ENV] = "1"
    else:
        os.environ.pop(CUDA_PACKED_ROWS_ENV, None)
    if hasattr(_C, "set_cuda_packed_rows"):  # built with CUDA
        _C.set_cuda_packed_rows(enabled)


@contextlib.contextmanager
def cuda_packed_rows(enabled: bool):
    """The cuda backend's opt-in row-in-registers kernels (FASTADAPTER_CUDA_PACKED_ROWS=1) on or off inside
    the block, then off (or on, where the variable was set before). They stay opt-in until a GPU run has checked
    and timed them (benchmarks/gpu/run.sh)."""
    before = os.environ.get(CUDA_PACKED_ROWS_ENV) == "1"
    set_cuda_packed_rows(enabled)
    try:
        yield
    finally:
        set_cuda_packed_rows(before)
