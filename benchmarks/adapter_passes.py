"""Where the fused adapter's time goes on CPU, and how it fares at small token counts.

    python benchmarks/adapter_passes.py

1. The fused forward+backward at T=8192, D=768, r=256 (float32) taken apart: each GEMM and each
   memory-bound pass timed in the order the op runs them (medians of 25 sequences).
2. Fused against eager forward+backward at the token counts of one BLIP layer call (20: a batch of 2
   captions in the decoder; 394: 2 images at 224 px), medians of 200 interleaved runs.
3. The same, interleaved (medians of 40), at the shapes of the pytest-benchmark suite (1154 image tokens,
   1280 caption tokens; r = 64, 256, 512), whose one-after-another medians carry this machine's drift.
"""

import statistics
import time

import torch

import fastadapter
from fastadapter import measure


def passes(tokens=8192, width=768, r=256, repeats=25) -> dict[str, float]:
    x, gy = torch.randn(tokens, width), torch.randn(tokens, width)
    w_down, b_down, w_up, b_up = torch.randn(r, width) / 28, torch.randn(r), torch.randn(width, r) / 16, torch.randn(width)
    nw, nb = torch.ones(r), torch.zeros(r)
    ops = torch.ops.fastadapter
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        marks = [("start", time.perf_counter())]

        def mark(name):
            marks.append((name, time.perf_counter()))

        h = torch.addmm(b_down, x, w_down.t()); mark("GEMM h = x W_down^T + b")
        a, mean, rstd = ops.norm_act_forward(h, nw, nb, "gelu", "layernorm", 1e-5); mark("norm+act forward")
        y = x + b_up; mark("residual + bias (forward)")
        y.addmm_(a, w_up.t()); mark("GEMM y += a W_up^T")
        grad_a = gy.mm(w_up); mark("GEMM grad_a = gy W_up")
        a, grad_h, *_ = ops.norm_act_backward(grad_a, h, mean, rstd, nw, nb, "gelu", "layernorm"); mark("norm+act backward")
        grad_x, _ = ops.residual_grad(gy); mark("residual grad (copy + bias grad)")
        grad_x.addmm_(grad_h, w_down); mark("GEMM grad_x += grad_h W_down")
        a.t().mm(gy).t().contiguous(); mark("GEMM grad_W_up")
        grad_h.t().mm(x); mark("GEMM grad_W_down")
        for (_, t0), (name, t1) in zip(marks, marks[1:]):
            times.setdefault(name, []).append(t1 - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def fused_against_eager(cases, width=768, repeats=200) -> dict[tuple[int, int], dict[str, float]]:
    out = {}
    for tokens, r in cases:
        x, grad = torch.randn(tokens, width, requires_grad=True), torch.randn(tokens, width)
        config = fastadapter.AdapterConfig(bottleneck=r, init="normal")
        eager = fastadapter.Adapter(width, config.replace(backend="reference"))
        fused = fastadapter.Adapter(width, config.replace(backend="cpu"))
        fns = {name: (lambda m: lambda: torch.autograd.grad(m(x), [x, *m.parameters()], grad))(m)
               for name, m in (("eager", eager), ("fused", fused))}
        out[tokens, r] = measure.interleaved_medians(fns, repeats=repeats, warmup=max(2, repeats // 10))
    return out


def main():
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    timed = passes()
    total = sum(timed.values())
    print("| step (T=8192, D=768, r=256, float32) | ms | share |\n|---|---:|---:|")
    for name, seconds in timed.items():
        print(f"| {name} | {1e3 * seconds:.2f} | {seconds / total:.1%} |")
    gemms = sum(v for k, v in timed.items() if k.startswith("GEMM"))
    print(f"| **all** (GEMMs {1e3 * gemms:.1f} ms, other passes {1e3 * (total - gemms):.1f} ms) | {1e3 * total:.2f} | |")
    print("\n| tokens | r | eager fwd+bwd (µs) | fused fwd+bwd (µs) | fused / eager |\n|---:|---:|---:|---:|---:|")
    small = fused_against_eager([(20, 256), (394, 256)])
    suite = fused_against_eager([(t, r) for t in (1154, 1280) for r in (64, 256, 512)], repeats=40)
    for (tokens, r), t in {**small, **suite}.items():
        print(f"| {tokens} | {r} | {1e6 * t['eager']:.0f} | {1e6 * t['fused']:.0f} | {t['fused'] / t['eager']:.2f} |")


if __name__ == "__main__":
    main()
