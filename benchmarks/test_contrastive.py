"""The contrastive op (itc_loss, forward+backward): eager PyTorch (the materialised N x N loss), torch.compile
of it, and every fused backend built here. N images = N texts with d = 256 (BLIP's ITC width): a CPU-sized batch
and a GPU-sized one. extra_info carries the peak allocated on GPU and the peak RSS growth on CPU.
"""

import pytest
import torch

import fastadapter
from conftest import DEVICES, require, time_call
from fastadapter.bench import measure

D = 256
N = {"cpu": 2048, "cuda": 16384}
DTYPES = {"cpu": torch.float32, "cuda": torch.bfloat16}
IMPLEMENTATIONS = {"cpu": ("eager", "compile", "cpu", "torch"), "cuda": ("eager", "compile", "triton", "torch")}
CASES = [(device, impl) for device in DEVICES for impl in IMPLEMENTATIONS[device]]


def loss_function(impl, device):
    backend = "eager" if impl == "compile" else impl
    info = fastadapter.backends("contrastive_loss")[backend]
    if not info.available or not ({device, "any"} & set(info.devices)):
        pytest.skip(f"backend {backend!r} does not run on {device} here: {info.reason}")

    def loss(image, text, tau):
        return fastadapter.itc_loss(image, text, tau, backend=backend)

    return torch.compile(loss) if impl == "compile" else loss


@pytest.mark.parametrize("device,impl", CASES)
def test_itc_loss(benchmark, device, impl):
    require(device)
    n, dtype = N[device], DTYPES[device]
    loss = loss_function(impl, device)
    image = torch.randn(n, D, device=device, dtype=dtype, requires_grad=True)
    text = torch.randn(n, D, device=device, dtype=dtype, requires_grad=True)
    tau = torch.tensor(0.07, device=device, requires_grad=True)
    benchmark.group = f"itc_loss {device} N={n} d={D} forward+backward"
    benchmark.extra_info.update(impl=impl, n=n, d=D, dtype=str(dtype))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = measure.peak_rss_bytes()
    time_call(benchmark, lambda: torch.autograd.grad(loss(image, text, tau), (image, text, tau)), device)
    if device == "cuda":
        benchmark.extra_info["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    else:
        benchmark.extra_info["peak_rss_growth_bytes"] = measure.peak_rss_bytes() - rss_before
