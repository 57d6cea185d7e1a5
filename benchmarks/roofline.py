"""The roofline floor of the adapter op (docs/ARCHITECTURE.md, Measuring): the least time any implementation could take,
max(FLOPs / matmul throughput, bytes / memory bandwidth), from the least work each phase must do and this
device's throughput and bandwidth as measured here — one large GEMM and one large copy in the suites' dtype, so
the floor is what this machine's own libraries reach, not a datasheet's peak. And a second, measured floor: the
phase's GEMMs alone at the adapter's own shapes (adapter_gemms), which thin GEMMs (r = 64) keep well above the
first.
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

OP_PASSES = ("forward", "backward", "forward_backward")


def adapter_work(phase: str, tokens: int, width: int, r: int, itemsize: int) -> tuple[int, int]:
    """(FLOPs, bytes) the adapter must at least do in `phase`: its GEMMs of tokens x width x r (two in the
    forward, four in the backward: grad_a, grad_x and the two weight grads), and one pass over each row tensor it
    must read or write. Parameters and per-row statistics are left out (small against the rows), which keeps it
    a floor. forward (inference): read x, write y. backward: read grad_y, x and h, write grad_x.
    forward_backward: the training forward, which also writes h, then the backward. h is kept for the backward,
    as every implementation measured here keeps it (recompute=True would trade its bytes for a third GEMM)."""
    gemm = 2 * tokens * width * r
    rows, bottleneck = tokens * width * itemsize, tokens * r * itemsize
    forward = (2 * gemm, 2 * rows)
    backward = (4 * gemm, 3 * rows + bottleneck)
    if phase == "forward":
        return forward
    if phase == "backward":
        return backward
    if phase == "forward_backward":
        return forward[0] + backward[0], forward[1] + bottleneck + backward[1]
    raise ValueError(f"unknown phase {phase!r}; expected one of {OP_PASSES}")


def adapter_gemms(phase: str, tokens: int, width: int, r: int, device: str, dtype: torch.dtype):
    """A callable that runs only the GEMMs of `phase` at the adapter's shapes and layouts, as the native backends
    (csrc/adapter/) call them (forward: x·w_downᵀ, a·w_upᵀ; backward: grad_y·w_up, grad_h·w_down, grad_hᵀ·x,
    grad_yᵀ·a): the GEMM-only floor (docs/ARCHITECTURE.md, Measuring) — what an implementation that leaves the GEMMs
    to the BLAS library can at best reach on this machine, thin GEMMs' real rate included; above it are its own
    passes, allocation and dispatch. Its FLOPs are adapter_work's."""
    if phase not in OP_PASSES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {OP_PASSES}")
    make = functools.partial(torch.randn, device=device, dtype=dtype)
    x, grad_y, rows_r = make(tokens, width), make(tokens, width), make(tokens, r)  # rows_r: h, a or grad_h
    w_down, w_up = make(r, width), make(width, r)
    # Into outputs made once: fresh multi-megabyte CPU memory faults in page by page on first touch, which is
    # the allocator's cost, not the GEMM's (the op takes its large tensors from a cache of huge pages).
    out_r, out_rows, out_w_down, out_w_up = (torch.empty(shape, device=device, dtype=dtype) for shape in
                                             ((tokens, r), (tokens, width), (r, width), (width, r)))

    def forward():
        return torch.mm(x, w_down.t(), out=out_r), torch.mm(rows_r, w_up.t(), out=out_rows)

    def backward():
        return (torch.mm(grad_y, w_up, out=out_r), torch.mm(rows_r, w_down, out=out_rows),
                torch.mm(rows_r.t(), x, out=out_w_down), torch.mm(grad_y.t(), rows_r, out=out_w_up))

    return {"forward": forward, "backward": backward, "forward_backward": lambda: (forward(), backward())}[phase]


def seconds(fn, device: str, statistic: str = "median", min_runs: int = 5, min_seconds: float = 0.05) -> float:
    """Seconds per call of fn, their median or min: triton's do_bench on GPU (CUDA events, L2 cleared each run);
    on CPU after a warm-up, at least min_runs runs and min_seconds in all."""
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, return_mode=statistic) / 1e3
    fn()  # warm-up
    times = []
    while len(times) < min_runs or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": statistics.median, "min": min}[statistic](times)


def ceilings(device: str, dtype: torch.dtype, gemm_size: int | None = None, copy_bytes: int | None = None) -> dict:
    """This device's matmul throughput (FLOP/s; a square GEMM in dtype) and memory bandwidth (bytes/s; a copy,
    read + write), each from its fastest run: a ceiling is the best the machine reached, and on a shared CPU whose
    speed drifts a median taken at a slow moment would put the floor above what the cases then do (seen here: the
    median of five 1024-wide GEMMs ranged 0.11-0.18 TFLOP/s between four processes, the fastest of a second's runs
    0.18-0.21). Defaults: an 8192-wide GEMM and a 1 GiB copy on GPU, 1024 and 256 MiB on CPU, for at least 0.5 s."""
    gpu = device == "cuda"
    n = gemm_size or (8192 if gpu else 1024)
    size = copy_bytes or (2**30 if gpu else 2**28)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    matmul_s = seconds(lambda: torch.mm(a, b, out=out), device, "min", min_seconds=0.5)
    src = torch.ones(size, device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    copy_s = seconds(lambda: dst.copy_(src), device, "min", min_seconds=0.5)
    return {"matmul_flops_per_s": 2 * n**3 / matmul_s, "bandwidth_bytes_per_s": 2 * size / copy_s,
            "device": device, "dtype": str(dtype), "gemm_size": n, "copy_bytes": size}


def measured_ceilings(device: str, dtype: torch.dtype) -> dict:
    """ceilings() in a child process (this file run as a script), so that its buffers, ~0.5-2 GiB, neither raise
    the caller's peak RSS (the CPU suites report its growth per case) nor stay in its CUDA caching allocator."""
    child = subprocess.run([sys.executable, str(Path(__file__).resolve()), device, str(dtype).removeprefix("torch.")],
                           capture_output=True, text=True, timeout=300)
    if child.returncode != 0:
        raise RuntimeError(f"measuring the {device} ceilings failed: {child.stderr.strip()[-2000:]}")
    return json.loads(child.stdout)


def floor_seconds(flops: int, nbytes: int, ceiling: dict) -> float:
    return max(flops / ceiling["matmul_flops_per_s"], nbytes / ceiling["bandwidth_bytes_per_s"])


if __name__ == "__main__":  # python benchmarks/roofline.py DEVICE DTYPE: this device's ceilings as JSON
    print(json.dumps(ceilings(sys.argv[1], getattr(torch, sys.argv[2]))))
