"""The foundation targets (T=8192, D=768, r=256, float32, CPU) as pytest-benchmark extra_info ratios.

Timed: the fused forward+backward. The ratios against eager and the GEMM floor are measured in the same
process, interleaved, and recorded (not asserted: speed is reported, never a test verdict).
"""

import torch
from adapter_targets import measure_targets

import fastadapter


def test_adapter_targets_cpu(benchmark):
    results = measure_targets(repeats=7)
    benchmark.group = "adapter targets cpu T=8192 r=256"
    benchmark.extra_info.update({k.replace(" ", "_"): round(v, 4) for k, v in results.items()})
    module = fastadapter.Adapter(768, fastadapter.AdapterConfig(bottleneck=256, init="normal", backend="cpu"))
    x = torch.randn(8192, 768, requires_grad=True)
    grad = torch.randn_like(x)
    benchmark.pedantic(lambda: module(x).backward(grad), rounds=5, warmup_rounds=1)
