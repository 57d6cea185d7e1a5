"""Shared setup of the benchmark suites: devices, denormal flushing, GPU timing."""

import pytest
import torch

# Random weights can drive CPU arithmetic into denormals, which cost ~10x and are not what we measure.
torch.set_flush_denormal(True)

DEVICES = ("cpu", "cuda")


def require(device):
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("GPU case: no CUDA device here")


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_call(benchmark, fn, device, setup=None):
    """Time fn with pytest-benchmark (synchronised on GPU). On GPU also record the CUDA-event median of
    triton.testing.do_bench, since a wall clock around asynchronous launches misleads."""
    if device == "cuda" and setup is None:
        import triton.testing

        benchmark.extra_info["do_bench_median_ms"] = triton.testing.do_bench(fn, return_mode="median")

    def run():
        fn()
        sync(device)

    if setup is not None:
        return benchmark.pedantic(run, setup=setup, rounds=10 if device == "cpu" else 50, warmup_rounds=1)
    return benchmark(run)
