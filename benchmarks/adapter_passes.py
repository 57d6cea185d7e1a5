"""Where the fused adapter's time goes on CPU, and how it fares at small token counts.

    python benchmarks/adapter_passes.py

1. The fused forward+backward at T=8192, D=768, r=256 (float32) taken apart by torch.profiler: each
   GEMM, and the op's own time (its norm+activation passes, with the residual's rows folded in).
2. Fused against eager forward+backward at the token counts of one BLIP layer call (20: a batch of 2
   captions in the decoder; 394: 2 images at 224 px), medians of 200 interleaved runs.
3. The same, interleaved (medians of 40), at the shapes of the pytest-benchmark suite (1154 image tokens,
   1280 caption tokens; r = 64, 256, 512), whose one-after-another medians carry this machine's drift.
   In 2 and 3 the six GEMMs alone at each shape are interleaved too: how far each side is from its GEMMs.
4. Mixed precision: fused against eager forward+backward under torch.autocast(bfloat16) with float32
   parameters (the op casts like F.linear; eager runs LayerNorm and GELU in float32 by autocast's rules),
   at 394 tokens and the suite's shapes with r = 256 (medians of 40, interleaved).
5. The cost of a call itself: fastadapter.adapter against the eager adapter function at one token, D=64,
   r=16, where the arithmetic is nothing and what is timed is Python, dispatch, autograd and allocation
   (medians of 200 interleaved samples of 50 calls). On a GPU this host time is what a small call costs
   whenever the GPU waits for the host.
"""

import roofline
import torch

import fastadapter
from fastadapter.bench import measure


def passes(tokens=8192, width=768, r=256, repeats=15) -> dict[str, float]:
    """Milliseconds per fused forward+backward by step, from torch.profiler: each GEMM, and what the op
    does itself (self time of adapter_forward / adapter_backward: the norm+activation pass with the
    residual's rows folded in, allocation and dispatch)."""
    from torch.profiler import ProfilerActivity, profile

    config = fastadapter.AdapterConfig(bottleneck=r, init="normal", backend="cpu")
    module = fastadapter.Adapter(width, config)
    x, grad = torch.randn(tokens, width, requires_grad=True), torch.randn(tokens, width)
    inputs = [x, *module.parameters()]
    for _ in range(3):
        torch.autograd.grad(module(x), inputs, grad)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(repeats):
            torch.autograd.grad(module(x), inputs, grad)
    out: dict[str, float] = {}

    def add(name, self_us):
        out[name] = out.get(name, 0.0) + self_us / 1e3 / repeats

    for event in prof.key_averages(group_by_input_shape=True):
        us = event.self_cpu_time_total
        if event.key == "aten::addmm":
            add("GEMM h = x W_down^T + b_down", us)
        elif event.key == "aten::addmm_":  # same shapes: (T, r) x (r, D) accumulated into (T, D)
            add("GEMMs y += a W_up^T, grad_x += grad_h W_down (2)", us)
        elif event.key == "aten::mm" and tuple(event.input_shapes[0]) == (tokens, width):
            add("GEMM grad_a = grad_y W_up", us)
        elif event.key == "aten::mm":
            add("GEMMs grad_W_up, grad_W_down (2)", us)
        elif event.key == "fastadapter::adapter_forward":
            add("op itself, forward: norm+act pass with y = x + b_up", us)
        elif event.key == "fastadapter::adapter_backward":
            add("op itself, backward: norm+act pass with grad_x = grad_y", us)
        elif event.key.startswith("aten::"):
            add("other ATen calls (transpose copy, small sums, allocation)", us)
    return out


def fused_against_eager(cases, width=768, repeats=200, autocast=None) -> dict[tuple[int, int], dict[str, float]]:
    """Interleaved medians (s) of eager and fused forward+backward per (tokens, r), and of their six GEMMs alone
    at the same shapes in the GEMMs' dtype (roofline.adapter_gemms: the GEMM-only floor); autocast: a dtype to
    run them under torch.autocast with, float32 parameters and input (grad_y then comes in that dtype)."""
    out = {}
    for tokens, r in cases:
        x = torch.randn(tokens, width, requires_grad=True)
        grad = torch.randn(tokens, width, dtype=autocast or torch.float32)
        config = fastadapter.AdapterConfig(bottleneck=r, init="normal")
        eager = fastadapter.Adapter(width, config.replace(backend="eager"))
        fused = fastadapter.Adapter(width, config.replace(backend="cpu"))

        def step(m):
            def run():
                with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
                    y = m(x)
                torch.autograd.grad(y, [x, *m.parameters()], grad)
            return run

        gemms = roofline.adapter_gemms("forward_backward", tokens, width, r, "cpu", autocast or torch.float32)
        fns = {"eager": step(eager), "fused": step(fused), "gemms": gemms}
        out[tokens, r] = measure.interleaved_medians(fns, repeats=repeats, warmup=max(2, repeats // 10))
    return out


def per_call(repeats=200, calls=50) -> dict[str, float]:
    """Microseconds per call of fastadapter.adapter at a size where only the call's own overhead counts: fused
    against the eager adapter function, each sample `calls` calls in a row, samples interleaved."""
    from fastadapter.ops.adapter import reference

    x, w_down, b_down, norm_weight, norm_bias, w_up, b_up = (
        torch.randn(*shape, requires_grad=True) for shape in ((1, 64), (16, 64), (16,), (16,), (16,), (64, 16), (64,)))
    args, grad = (x, w_down, b_down, norm_weight, norm_bias, w_up, b_up), torch.randn(1, 64)
    functions = {"eager": reference.adapter, "fused": lambda *a: fastadapter.adapter(*a, backend="cpu")}

    def repeat(fn):
        def run():
            for _ in range(calls):
                fn()
        return run

    def forward(f):
        with torch.no_grad():
            f(*args)

    fns = {}
    for name, f in functions.items():
        fns[f"{name} forward (no grad)"] = repeat(lambda f=f: forward(f))
        fns[f"{name} forward+backward"] = repeat(lambda f=f: f(*args).backward(grad))
    medians = measure.interleaved_medians(fns, repeats=repeats, warmup=10)
    return {name: 1e6 * s / calls for name, s in medians.items()}


def main():
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    timed = passes()
    total = sum(timed.values())
    print("| step of one fused fwd+bwd (T=8192, D=768, r=256, float32) | ms | share |\n|---|---:|---:|")
    for name, ms in timed.items():
        print(f"| {name} | {ms:.2f} | {ms / total:.1%} |")
    gemms = sum(v for k, v in timed.items() if k.startswith("GEMM"))
    print(f"| **all** (GEMMs {gemms:.1f} ms, the rest {total - gemms:.1f} ms) | {total:.2f} | |")
    header = ("| tokens | r | eager fwd+bwd (µs) | fused fwd+bwd (µs) | GEMMs alone (µs) | fused / eager | "
              "eager / GEMMs | fused / GEMMs |\n|---:|---:|---:|---:|---:|---:|---:|---:|")

    def rows(timed):
        for (tokens, r), t in timed.items():
            print(f"| {tokens} | {r} | {1e6 * t['eager']:.0f} | {1e6 * t['fused']:.0f} | {1e6 * t['gemms']:.0f} | "
                  f"{t['fused'] / t['eager']:.2f} | {t['eager'] / t['gemms']:.2f} | {t['fused'] / t['gemms']:.2f} |")

    print("\n" + header)
    small = fused_against_eager([(20, 256), (394, 256)])
    suite = fused_against_eager([(t, r) for t in (1154, 1280) for r in (64, 256, 512)], repeats=40)
    rows({**small, **suite})
    print("\nUnder torch.autocast(bfloat16), float32 parameters and input (the GEMMs alone in bfloat16):\n\n" + header)
    rows(fused_against_eager([(t, 256) for t in (394, 1154, 1280)], repeats=40, autocast=torch.bfloat16))
    calls = per_call()
    print("\n| one call at T=1, D=64, r=16 | eager (µs) | fused (µs) | fused / eager |\n|---|---:|---:|---:|")
    for phase in ("forward (no grad)", "forward+backward"):
        eager, fused = calls[f"eager {phase}"], calls[f"fused {phase}"]
        print(f"| {phase} | {eager:.1f} | {fused:.1f} | {fused / eager:.2f} |")


if __name__ == "__main__":
    main()
