"""Which implementations of the ops exist here, and which one a call gets.

Backend names, the same for every op (docs/ARCHITECTURE.md):
- `cpu`: C++ kernels (csrc/<op>/cpu); `cuda`: CUDA C++ (csrc/<op>/cuda); `triton`: Triton (kernels/<op>.py);
- `torch`: the op's saved-for-backward contract in plain PyTorch (fastadapter/ops/<op>/torch_backend.py), which
  the fused backends mix with in tests;
- `eager`: what a user writes in plain PyTorch, with autograd (fastadapter/ops/<op>/reference.py): the baseline
  of every benchmark. `reference`, its former name, is still accepted with a DeprecationWarning;
- `auto`: per op and device, the first available of the op's preference order (OpBackends.auto).

Each op has one OpBackends table: the backends it implements and its `auto` rule. Asking for a backend that is
not there raises BackendUnavailableError with the reason; nothing is silently faked. Availability is probed once,
at import, so that torch.compile sees plain Python values and a call pays a dict lookup.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass

import torch

from .. import _C

BACKENDS = ("cpu", "cuda", "triton", "torch", "eager")
DEPRECATED = {"reference": "eager"}


class BackendUnavailableError(RuntimeError):
    """The requested backend was not built, cannot run on this machine or device, or the op lacks it."""


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    devices: tuple[str, ...]  # device types it runs on ("any": every device)
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


_BUILT = {info.name: info for info in (
    _probe_cpu(), _probe_cuda(), _probe_triton(),
    BackendInfo("torch", True, ("cpu", "cuda", "any"), "plain PyTorch, the ops' saved-for-backward contracts"),
    BackendInfo("eager", True, ("cpu", "cuda", "any"), "plain PyTorch with autograd"))}


class OpBackends:
    """One op's table: the backends it implements (name -> what that implementation is) and its `auto` rule,
    a preference order per device type (`other` for any device type not named). Triton through the CPU
    interpreter is never picked by `auto`."""

    def __init__(self, op: str, implemented: dict[str, str], auto: dict[str, tuple[str, ...]]):
        unknown = set(implemented) - set(BACKENDS)
        if unknown:
            raise ValueError(f"{op}: unknown backend name(s) {sorted(unknown)}; the names are {BACKENDS}")
        self.op = op
        self.info = {name: self._info(name, implemented.get(name)) for name in BACKENDS}
        self._auto = {device: next((name for name in order if self.runs_on(name, device, interpreted=False)),
                                   "eager") for device, order in auto.items()}

    def _info(self, name: str, what: str | None) -> BackendInfo:
        built = _BUILT[name]
        if what is None:
            return BackendInfo(name, False, (), f"the {self.op} op has no {name} implementation")
        if not built.available:
            return BackendInfo(name, False, built.devices, built.reason)
        plain = name in ("torch", "eager")  # nothing built to report for plain PyTorch
        return BackendInfo(name, True, built.devices, what if plain else f"{what}; {built.reason}")

    def runs_on(self, name: str, device_type: str, interpreted: bool = True) -> bool:
        info = self.info[name]
        if name == "triton" and device_type == "cpu" and not interpreted:
            return False
        return info.available and (device_type in info.devices or "any" in info.devices)

    def resolve(self, backend: str, device: torch.device) -> str:
        """The concrete backend a call on `device` gets; raises if `backend` cannot run there."""
        if backend == "auto":
            return self._auto.get(device.type) or self._auto.get("other", "eager")
        if backend in DEPRECATED:
            warnings.warn(f"fastadapter backend {backend!r} is now called {DEPRECATED[backend]!r}",
                          DeprecationWarning, stacklevel=3)
            backend = DEPRECATED[backend]
        info = self.info.get(backend)
        if info is None:
            raise ValueError(f"unknown backend {backend!r}; expected 'auto' or one of {BACKENDS}")
        if not self.runs_on(backend, device.type):
            if not info.available:
                raise BackendUnavailableError(f"fastadapter backend {backend!r} is not available: {info.reason}")
            raise BackendUnavailableError(f"fastadapter backend {backend!r} does not run on {device.type} tensors "
                                          f"(it runs on {', '.join(info.devices)})")
        return backend


_OPS: dict[str, OpBackends] = {}


def register(table: OpBackends) -> OpBackends:
    _OPS[table.op] = table
    return table


def backends(op: str | None = None) -> dict[str, BackendInfo]:
    """What was built and can run here, and why a backend is missing; with `op`, for that op's implementations."""
    if op is None:
        return dict(_BUILT)
    if op not in _OPS:
        raise ValueError(f"unknown op {op!r}; the ops are {sorted(_OPS)}")
    return dict(_OPS[op].info)


def ops() -> tuple[str, ...]:
    return tuple(sorted(_OPS))
