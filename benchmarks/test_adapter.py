"""The adapter op: eager PyTorch, torch.compile of it, and every fused backend built here.

Shapes around BLIP-base: width 768; bottleneck 64/256/512; tokens of a batch of 384-px images (577 per
image) and of a batch of 40-token captions. extra_info carries bytes saved for backward (parameters
excluded), peak allocated on GPU and peak RSS growth on CPU, the case's roofline floor and the time of its GEMMs
alone at the same shapes (roofline.py).
"""

import pytest
import roofline
import torch

import fastadapter
from conftest import DEVICES, record_floor, require, time_call
from fastadapter.bench import measure
from fastadapter.ops.adapter.registration import set_cuda_packed_rows

WIDTH = 768
TOKENS = {"cpu": {"images": 2 * 577, "captions": 32 * 40}, "cuda": {"images": 32 * 577, "captions": 32 * 40}}
DTYPES = {"cpu": torch.float32, "cuda": torch.bfloat16}
BOTTLENECKS = (64, 256, 512)
# cuda_packed: the cuda backend with its opt-in row-in-registers kernels (FASTADAPTER_CUDA_PACKED_ROWS=1).
IMPLEMENTATIONS = {"cpu": ("eager", "compile", "cpu"), "cuda": ("eager", "compile", "cuda", "cuda_packed", "triton")}
CASES = [(device, impl) for device in DEVICES for impl in IMPLEMENTATIONS[device]]


def make_module(impl, r, device):
    backend = {"compile": "eager", "cuda_packed": "cuda"}.get(impl, impl)
    if backend != "eager":
        info = fastadapter.backends()[backend]
        if not info.available or device not in info.devices:
            pytest.skip(f"backend {backend!r} does not run on {device} here: {info.reason}")
    module = fastadapter.Adapter(WIDTH, fastadapter.AdapterConfig(bottleneck=r, init="normal", backend=backend),
                                 device=device, dtype=DTYPES[device])
    if impl == "compile":
        module.forward = torch.compile(module.forward)
    return module


@pytest.mark.parametrize("phase", roofline.OP_PASSES)
@pytest.mark.parametrize("r", BOTTLENECKS)
@pytest.mark.parametrize("tokens", ("images", "captions"))
@pytest.mark.parametrize("device,impl", CASES)
def test_adapter(benchmark, request, device, impl, tokens, r, phase):
    require(device)
    if impl == "cuda_packed":  # on for this case, off after it (set_cuda_packed_rows: the env alone is read once)
        set_cuda_packed_rows(True)
        request.addfinalizer(lambda: set_cuda_packed_rows(False))
    module = make_module(impl, r, device)
    n = TOKENS[device][tokens]
    x = torch.randn(n, WIDTH, device=device, dtype=DTYPES[device], requires_grad=True)
    grad = torch.randn_like(x)
    benchmark.group = f"adapter {device} {tokens} T={n} r={r} {phase}"
    benchmark.extra_info.update(impl=impl, tokens=n, width=WIDTH, bottleneck=r, dtype=str(DTYPES[device]))
    record_floor(benchmark, device, DTYPES[device],
                 *roofline.adapter_work(phase, n, WIDTH, r, DTYPES[device].itemsize))
    # [0]: the measured graph is dropped at once, so that the peaks below do not count it
    benchmark.extra_info["saved_for_backward_bytes"] = measure.saved_bytes(lambda: module(x),
                                                                           exclude=module.parameters())[0]

    # autograd.grad, not .backward(): nothing accumulates into .grad between repetitions (which would time an
    # accumulation kernel per parameter that a training step's zeroed grads do not run)
    leaves = [x, *module.parameters()]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = measure.peak_rss_bytes()
    if phase == "forward":
        def forward():
            with torch.no_grad():
                module(x)

        time_call(benchmark, forward, device)
    elif phase == "backward":  # the graph is built, untimed, before each round
        graph = {}

        def setup():
            graph["y"] = module(x)

        time_call(benchmark, lambda: torch.autograd.grad(graph.pop("y"), leaves, grad), device, setup=setup)
    else:
        time_call(benchmark, lambda: torch.autograd.grad(module(x), leaves, grad), device)
    if device == "cuda":
        benchmark.extra_info["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    else:
        benchmark.extra_info["peak_rss_growth_bytes"] = measure.peak_rss_bytes() - rss_before
    # the phase's GEMMs alone at these shapes, their fastest run (a floor), after the peaks: its buffers are not
    # the case's
    gemms = roofline.adapter_gemms(phase, n, WIDTH, r, device, DTYPES[device])
    benchmark.extra_info["gemms_ms"] = 1e3 * roofline.seconds(gemms, device, "min", min_seconds=0.1)
