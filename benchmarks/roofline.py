"""The roofline floor of the adapter op (DESIGN.md, Measuring): the least time any implementation could take,
max(FLOPs / matmul throughput, bytes / memory bandwidth), from the least work each phase must do and this
device's throughput and bandwidth as measured here — one large GEMM and one large copy in the suites' dtype, so
the floor is what this machine's own libraries reach, not a datasheet's peak.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch


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
    raise ValueError(f"unknown phase {phase!r}; expected forward, backward or forward_backward")


def _median_seconds(fn, device: str) -> float:
    if device == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, return_mode="median") / 1e3
    fn()  # warm-up
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ceilings(device: str, dtype: torch.dtype, gemm_size: int | None = None, copy_bytes: int | None = None) -> dict:
    """This device's matmul throughput (FLOP/s; a square GEMM in dtype) and memory bandwidth (bytes/s; a copy,
    read + write), medians. Defaults: an 8192-wide GEMM and a 1 GiB copy on GPU, 1024 and 256 MiB on CPU."""
    gpu = device == "cuda"
    n = gemm_size or (8192 if gpu else 1024)
    size = copy_bytes or (2**30 if gpu else 2**28)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    matmul_s = _median_seconds(lambda: torch.mm(a, b, out=out), device)
    src = torch.ones(size, device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    copy_s = _median_seconds(lambda: dst.copy_(src), device)
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
