"""benchmarks/roofline.py: the least work of each phase of the adapter, the device's ceilings, the floor."""

import time

import pytest
import torch
from helpers import benchmarks_module
from torch.utils.flop_counter import FlopCounterMode

roofline = benchmarks_module("roofline")


def test_adapter_work_by_hand():
    # T = 10 rows, D = 6, r = 3, 2-byte elements: a GEMM is 2 * 10 * 6 * 3 = 360 FLOPs; a row tensor 120 bytes,
    # the bottleneck tensor h 60
    assert roofline.adapter_work("forward", 10, 6, 3, 2) == (720, 240)  # down and up GEMMs; read x, write y
    assert roofline.adapter_work("backward", 10, 6, 3, 2) == (1440, 420)  # 4 GEMMs; read grad_y, x, h; write grad_x
    assert roofline.adapter_work("forward_backward", 10, 6, 3, 2) == (2160, 240 + 60 + 420)  # training: h written
    with pytest.raises(ValueError, match="unknown phase 'both'"):
        roofline.adapter_work("both", 10, 6, 3, 2)


def test_floor_is_the_slower_of_compute_and_memory():
    ceiling = {"matmul_flops_per_s": 1e12, "bandwidth_bytes_per_s": 1e11}
    assert roofline.floor_seconds(2e9, 1e8, ceiling) == pytest.approx(2e-3)  # compute-bound
    assert roofline.floor_seconds(2e8, 1e9, ceiling) == pytest.approx(1e-2)  # memory-bound


def test_ceilings_are_measured_here_and_in_a_child_process():
    small = roofline.ceilings("cpu", torch.float32, gemm_size=128, copy_bytes=2**20)
    assert small["gemm_size"] == 128 and small["copy_bytes"] == 2**20
    assert small["device"] == "cpu" and small["dtype"] == "torch.float32"
    assert small["matmul_flops_per_s"] > 1e8 and small["bandwidth_bytes_per_s"] > 1e8  # any CPU does more
    child = roofline.measured_ceilings("cpu", torch.float32)  # the defaults, as the suites take them
    assert child["gemm_size"] == 1024 and child["copy_bytes"] == 2**28
    assert child["matmul_flops_per_s"] > 1e8 and child["bandwidth_bytes_per_s"] > 1e8
    with pytest.raises(RuntimeError, match="measuring the nowhere ceilings failed"):
        roofline.measured_ceilings("nowhere", torch.float32)


@pytest.mark.parametrize("phase", ["forward", "backward", "forward_backward"])
def test_the_gemms_alone_are_the_phase_s_gemms(phase):
    """adapter_gemms runs exactly the FLOPs adapter_work counts, at the op's shapes: (T, r) and (T, D) forward;
    grad_a (T, r), grad_x (T, D) and the weight grads (r, D) and (D, r) backward."""
    tokens, width, r = 37, 48, 5
    gemms = roofline.adapter_gemms(phase, tokens, width, r, "cpu", torch.float32)
    with FlopCounterMode(display=False) as counter:
        out = gemms()
    assert counter.get_total_flops() == roofline.adapter_work(phase, tokens, width, r, 4)[0]
    forward, backward = [(tokens, r), (tokens, width)], [(tokens, r), (tokens, width), (r, width), (width, r)]
    shapes = {"forward": forward, "backward": backward, "forward_backward": forward + backward}[phase]
    flat = [t for part in out for t in (part if isinstance(part, tuple) else (part,))]
    assert [tuple(t.shape) for t in flat] == shapes
    with pytest.raises(ValueError, match="unknown phase 'both'"):
        roofline.adapter_gemms("both", tokens, width, r, "cpu", torch.float32)


def test_seconds_runs_enough_on_cpu():
    calls = []
    median = roofline.seconds(lambda: calls.append(1), "cpu", min_runs=7, min_seconds=0.0)
    assert len(calls) == 8 and 0 <= median < 0.01  # a warm-up and seven timed runs
    calls.clear()
    start = time.perf_counter()
    fastest = roofline.seconds(lambda: calls.append(time.sleep(0.001)), "cpu", "min", min_runs=1, min_seconds=0.02)
    # runs of at least 1 ms until they add up to 0.02 s: at most 20 after the warm-up
    assert time.perf_counter() - start >= 0.02 and 2 <= len(calls) <= 21 and fastest >= 0.001
