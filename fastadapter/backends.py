"""Which implementations of the ops exist here, and which one a call gets.

A backend implements the fused norm + activation pass of the adapter (the GEMMs are ATen's on every
backend): `cpu` (C++, csrc/cpu), `cuda` (CUDA C++, csrc/cuda), `triton` (kernels/) and `eager` (plain
PyTorch, fastadapter.reference). `auto` picks the native kernels first (cpu; cuda, then triton): measured
faster than eager on CPU, not yet on GPU (benchmarks/results/). Asking for a backend that is not there
raises BackendUnavailableError with the reason; nothing is silently faked.
Availability is probed once, at import, so that torch.compile sees plain Python values.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from dataclasses import dataclass

import torch

from . import _C

BACKENDS = ("cpu", "cuda", "triton", "eager")
CUDA_PACKED_ROWS_ENV = "FASTADAPTER_CUDA_PACKED_ROWS"
AUTO_ORDER = {"cpu": ("cpu", "eager"), "cuda": ("cuda", "triton", "eager")}


class BackendUnavailableError(RuntimeError):
    """The requested backend was not built or cannot run on this machine or device."""


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    devices: tuple[str, ...]  # device types it runs on
    reason: str  # why it is (not) available


def _probe_cpu() -> BackendInfo:
    isa = _C.cpu_isa()
    supported = {"avx512": torch.cpu._is_avx512_supported, "avx2": torch.cpu._is_avx2_supported}
    if isa in supported and not supported[isa]():
        return BackendInfo("cpu", False, (), f"fastadapter._C was compiled for {isa}, which this CPU lacks; "
                           "rebuild here (pip install --no-build-isolation -e .) or set FASTADAPTER_CPU_ISA")
    return BackendInfo("cpu", True, ("cpu",), f"C++ kernels compiled for {isa}")


def _probe_cuda() -> BackendInfo:
    if not _C.built_with_cuda():
        why = ("torch is a CPU-only build" if torch.version.cuda is None else
               "fastadapter._C was built without CUDA (nvcc not found at build time, or FASTADAPTER_BUILD_CUDA=0); "
               "rebuild with nvcc on PATH or CUDA_HOME set")
        return BackendInfo("cuda", False, (), why)
    if not torch.cuda.is_available():
        return BackendInfo("cuda", False, (), "CUDA kernels are built but no CUDA device is visible")
    return BackendInfo("cuda", True, ("cuda",), f"CUDA kernels built for CUDA {torch.version.cuda}")


def _probe_triton() -> BackendInfo:
    if importlib.util.find_spec("triton") is None:
        return BackendInfo("triton", False, (), "triton is not installed (pip install triton)")
    devices = []
    if torch.cuda.is_available():
        devices.append("cuda")
    if os.environ.get("TRITON_INTERPRET") == "1":
        devices.append("cpu")
    if not devices:
        return BackendInfo("triton", False, (), "no CUDA device visible and TRITON_INTERPRET=1 is not set")
    return BackendInfo("triton", True, tuple(devices), "Triton kernels" + (
        " (interpreted on CPU: slow, for testing)" if "cpu" in devices else ""))


_INFO = {info.name: info for info in (_probe_cpu(), _probe_cuda(), _probe_triton(),
                                       BackendInfo("eager", True, ("cpu", "cuda", "any"), "plain PyTorch"))}


def backends() -> dict[str, BackendInfo]:
    """What was built and can run here, and why a backend is missing."""
    return dict(_INFO)


def resolve_backend(backend: str, device: torch.device) -> str:
    """The concrete backend a call on `device` gets; raises if `backend` cannot run there."""
    if backend == "auto":
        for name in AUTO_ORDER.get(device.type, ("eager",)):
            if device.type in _INFO[name].devices and not (name == "triton" and device.type == "cpu"):
                return name
        return "eager"
    if backend not in _INFO:
        raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {BACKENDS}")
    info = _INFO[backend]
    if not info.available:
        raise BackendUnavailableError(f"fastadapter backend {backend!r} is not available: {info.reason}")
    if device.type not in info.devices and "any" not in info.devices:
        raise BackendUnavailableError(
            f"fastadapter backend {backend!r} does not run on {device.type} tensors (it runs on {', '.join(info.devices)})")
    return backend


@contextlib.contextmanager
def cuda_packed_rows(enabled: bool):
    """The cuda backend's opt-in row-in-registers kernels (FASTADAPTER_CUDA_PACKED_ROWS=1) on or off inside
    the block, then as before. The kernels read the switch on every call; it stays opt-in until a GPU run has
    checked and timed them (benchmarks/gpu/run.sh)."""
    before = os.environ.pop(CUDA_PACKED_ROWS_ENV, None)
    if enabled:
        os.environ[CUDA_PACKED_ROWS_ENV] = "1"
    try:
        yield
    finally:
        os.environ.pop(CUDA_PACKED_ROWS_ENV, None)
        if before is not None:
            os.environ[CUDA_PACKED_ROWS_ENV] = before
