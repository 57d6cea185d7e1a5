"""Where one adapter call's time goes: the kernels it launches, their device time, and the host's time.

    python benchmarks/op_profile.py [--device cuda|cpu] [--tokens 18464,1280] [--bottlenecks 64,256,512]

For each implementation (eager PyTorch and the fused backends built for the device; on CUDA the cuda backend
both with its general and with its packed row-in-registers kernels), width 768, bf16 on CUDA and float32 on
CPU, forward (no grad) and forward+backward, per call:
- kernels: launches (torch.profiler, CUDA activity) and their summed device time;
- host: the time the host takes to issue a call (calls back to back, clocked without waiting for the device);
- wall: calls back to back with the device's clock (CUDA events; warm L2, unlike the suites' do_bench).
A call whose wall time is its host time, above its kernels' time, is host-bound: fewer launches and less host
work make it faster there, faster kernels do not. On CPU everything runs on the host: only wall time is given.
The top kernels by device time are listed for each implementation.
"""

import argparse
import collections
import itertools
import statistics
import time

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import fastadapter
from fastadapter.ops.adapter.registration import cuda_packed_rows

WIDTH = 768
IMPLEMENTATIONS = {"cuda": ("eager", "cuda", "cuda_packed", "triton"), "cpu": ("eager", "cpu")}


def make_call(impl, tokens, r, device, phase):
    """The timed call (run it inside cuda_packed_rows for cuda_packed)."""
    backend = {"cuda_packed": "cuda"}.get(impl, impl)
    if backend != "eager":
        info = fastadapter.backends()[backend]
        if not info.available or device not in info.devices:
            return None
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    module = fastadapter.Adapter(WIDTH, fastadapter.AdapterConfig(bottleneck=r, init="normal", backend=backend),
                                 device=device, dtype=dtype)
    x = torch.randn(tokens, WIDTH, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(x)
    if phase == "forward":
        def call():
            with torch.no_grad():
                module(x)
    else:
        leaves = [x, *module.parameters()]

        def call():  # autograd.grad: no .grad accumulates from one call to the next
            torch.autograd.grad(module(x), leaves, grad)
    return call


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def measure_call(call, device, calls=20, rounds=7) -> dict:
    """Per call: host µs to issue, wall µs, and (CUDA) kernel launches, device µs and the top kernels."""
    for _ in range(3):
        call()
    _sync(device)
    host, wall = [], []
    for _ in range(rounds):
        _sync(device)
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        for _ in range(calls):
            call()
        host.append((time.perf_counter() - t0) / calls * 1e6)
        if device == "cuda":
            end.record()
            end.synchronize()
            wall.append(start.elapsed_time(end) / calls * 1e3)
        else:
            wall.append(host[-1])
    out = {"host_us": statistics.median(host), "wall_us": statistics.median(wall)}
    if device != "cuda":
        return out
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            call()
        _sync(device)
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    by_name = collections.Counter()
    for e in kernels:
        by_name[e.name] += e.time_range.elapsed_us()
    out.update(launches=len(kernels) / calls, device_us=sum(by_name.values()) / calls,
               top=[(name, us / calls) for name, us in by_name.most_common(4)])
    return out


def run(device, tokens_list, bottlenecks, impls, phases=("forward", "forward_backward"), calls=20, rounds=7):
    results = []
    for tokens, r, phase, impl in itertools.product(tokens_list, bottlenecks, phases, impls):
        with cuda_packed_rows(impl == "cuda_packed"):
            call = make_call(impl, tokens, r, device, phase)
            if call is not None:
                results.append({"tokens": tokens, "r": r, "phase": phase, "impl": impl,
                                **measure_call(call, device, calls, rounds)})
    return results


def table(results, device) -> str:
    gpu = device == "cuda"
    head = "| tokens | r | phase | impl | " + ("launches | kernels (µs) | host (µs) | wall (µs) | bound |" if gpu
                                               else "wall (µs) |")
    lines = [head, "|" + "---:|" * 2 + "---|---|" + ("---:|" * 4 + "---|" if gpu else "---:|")]
    for row in results:
        cells = [row["tokens"], row["r"], row["phase"], row["impl"]]
        if gpu:
            bound = "host" if row["host_us"] > row["device_us"] else "device"
            cells += [f"{row['launches']:.0f}", f"{row['device_us']:.1f}", f"{row['host_us']:.1f}",
                      f"{row['wall_us']:.1f}", bound]
        else:
            cells.append(f"{row['wall_us']:.1f}")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if gpu:
        lines.append("\nTop kernels by device time (µs per call):")
        for row in results:
            top = "; ".join(f"{name[:60]} {us:.1f}" for name, us in row["top"])
            lines.append(f"- {row['tokens']} r={row['r']} {row['phase']} {row['impl']}: {top}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    parser.add_argument("--tokens", default=None, help="comma-separated (default: the suites' token counts)")
    parser.add_argument("--bottlenecks", default="64,256,512")
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    torch.set_flush_denormal(True)
    tokens = args.tokens or ("18464,1280" if args.device == "cuda" else "1154,1280")
    results = run(args.device, [int(t) for t in tokens.split(",")], [int(r) for r in args.bottlenecks.split(",")],
                  IMPLEMENTATIONS[args.device], calls=args.calls)
    print(table(results, args.device))


if __name__ == "__main__":
    main()
