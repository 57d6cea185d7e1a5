"""Shared setup of the benchmark suites: devices, denormal flushing, GPU timing, the roofline's ceilings."""

import functools
import json
import os
from pathlib import Path

import pytest
import roofline
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


def cuda_event_median_ms(fn, setup, rounds=50):
    """Median CUDA-event time of fn, with setup() run untimed before each round (do_bench has no setup). Like
    do_bench, it clears the L2 cache before each round, so that phases timed either way compare."""
    flush = torch.empty(256 * 2**20, dtype=torch.int8, device="cuda")
    times = []
    for _ in range(rounds + 2):  # two warm-up rounds
        setup()
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times[2:])[rounds // 2]


def time_call(benchmark, fn, device, setup=None):
    """Time fn with pytest-benchmark (synchronised on GPU). On GPU also record a CUDA-event median
    (triton.testing.do_bench, or our own loop when each round needs an untimed setup), since a wall
    clock around asynchronous launches misleads."""
    if device == "cuda":
        import triton.testing

        benchmark.extra_info["cuda_event_median_ms"] = (
            triton.testing.do_bench(fn, return_mode="median") if setup is None else cuda_event_median_ms(fn, setup))

    def run():
        fn()
        sync(device)

    if setup is not None:
        return benchmark.pedantic(run, setup=setup, rounds=10 if device == "cpu" else 50, warmup_rounds=1)
    return benchmark(run)


@functools.cache
def device_ceilings(device: str, dtype: torch.dtype) -> dict:
    """roofline.measured_ceilings, once per session and device, or read from the JSON file that
    FASTADAPTER_CEILINGS names when it holds this device and dtype (benchmarks/gpu/run.sh measures them once for
    its five suite runs); {"error": why} when they cannot be had, so that the cases still run and say why they
    have no floor."""
    try:
        saved = os.environ.get("FASTADAPTER_CEILINGS")
        if saved:
            ceiling = json.loads(Path(saved).read_text())
            if ceiling.get("device") == device and ceiling.get("dtype") == str(dtype):
                return ceiling
        return roofline.measured_ceilings(device, dtype)
    except Exception as error:  # reported in every case's extra_info instead
        return {"error": f"{type(error).__name__}: {error}"}


def record_floor(benchmark, device: str, dtype: torch.dtype, flops: int, nbytes: int) -> None:
    """The case's roofline floor in extra_info (floor_ms and what it rests on), or why there is none."""
    ceiling = device_ceilings(device, dtype)
    benchmark.extra_info.update(flops=flops, min_bytes=nbytes)
    if "error" in ceiling:
        benchmark.extra_info["floor_error"] = ceiling["error"]
        return
    benchmark.extra_info.update(floor_ms=1e3 * roofline.floor_seconds(flops, nbytes, ceiling),
                                matmul_tflops=ceiling["matmul_flops_per_s"] / 1e12,
                                bandwidth_gbps=ceiling["bandwidth_bytes_per_s"] / 1e9)
