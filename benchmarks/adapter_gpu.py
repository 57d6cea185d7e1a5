"""The adapter op on a GPU, timed the way #20 asks: every implementation interleaved in one process, per shape.

    python benchmarks/adapter_gpu.py --jsonl OUT.jsonl [--shapes 18464x256,18464x64,18464x512,1280x256]
                                     [--rounds 5] [--max-autotune]

Implementations: eager PyTorch, torch.compile of the eager adapter (default mode, at the first shape only unless
--compile-all: compiles take tens of seconds each; --max-autotune adds mode="max-autotune-no-cudagraphs" there,
whose GEMM search takes minutes),
and the fused backends built here (triton, cuda). bf16, D = 768. For each shape and phase (forward without grad;
forward+backward by torch.autograd.grad, so no .grad accumulates between repetitions), per call:
- device: CUDA-graph replay of CALLS calls captured back to back, divided by CALLS (no host time in it);
- host: the host's time to issue CALLS calls back to back, clocked without waiting for the device;
- wall: CALLS calls back to back with CUDA events (steady state: the larger of device and host);
- launches: CUDA kernels per call (torch.profiler), and bytes saved for backward (fwd+bwd only).
The rounds alternate the implementations (each round in a new order), and the median of the rounds is kept.
GPU clocks, temperature and power are read before and after each shape. Each case is written to the JSONL file
as soon as it finishes, so a run cut short keeps what it measured; a summary against the targets is printed.
On CPU (a smoke test of this script) only wall times are taken.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fastadapter  # noqa: E402
from fastadapter.bench.measure import saved_bytes  # noqa: E402
from fastadapter.ops.adapter import reference  # noqa: E402

WIDTH, CALLS = 768, 20


def gpu_state() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm,clocks.mem,temperature.gpu,power.draw",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        return f"unread ({error})"


def make_calls(tokens, r, device, dtype, compiled, max_autotune):
    """{implementation: (forward call, forward+backward call)} on shared inputs."""
    g = torch.Generator(device="cpu").manual_seed(tokens * 1000 + r)
    x = torch.randn(tokens, WIDTH, generator=g).to(device, dtype).requires_grad_()
    params = [torch.randn(r, WIDTH, generator=g) / WIDTH ** 0.5, torch.randn(r, generator=g) * 0.1,
              1 + 0.1 * torch.randn(r, generator=g), 0.1 * torch.randn(r, generator=g),
              torch.randn(WIDTH, r, generator=g) / r ** 0.5, torch.randn(WIDTH, generator=g) * 0.1]
    params = [p.to(device, dtype).requires_grad_() for p in params]
    grad = torch.randn(tokens, WIDTH, generator=g).to(device, dtype)
    leaves = [x, *params]
    functions = {"eager": reference.adapter}
    if compiled:
        functions["compile"] = torch.compile(reference.adapter, dynamic=False)
    if max_autotune:
        functions["compile-max-autotune"] = torch.compile(reference.adapter, mode="max-autotune-no-cudagraphs",
                                                          dynamic=False)
    for backend in ("triton", "cuda", "cpu"):
        info = fastadapter.backends("adapter")[backend]
        if info.available and device in info.devices:
            functions[backend] = lambda *a, _b=backend: fastadapter.adapter(*a, backend=_b)
    calls = {}
    for name, fn in functions.items():
        def forward(fn=fn):
            with torch.no_grad():
                return fn(*leaves)

        def forward_backward(fn=fn):
            return torch.autograd.grad(fn(*leaves), leaves, grad)

        calls[name] = (forward, forward_backward, fn)
    return calls, leaves


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def wall(call, device) -> float:
    _sync(device)
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(CALLS):
            call()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3 / CALLS
    start = time.perf_counter()
    for _ in range(CALLS):
        call()
    return (time.perf_counter() - start) / CALLS


def host(call, device) -> float:
    _sync(device)
    start = time.perf_counter()
    for _ in range(CALLS):
        call()
    seconds = (time.perf_counter() - start) / CALLS
    _sync(device)
    return seconds


def graph_of(call):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(CALLS):
            call()
    return graph


def device_time(graph) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e-3 / CALLS


def launches(call) -> int:
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def measure_shape(tokens, r, device, dtype, rounds, compiled, max_autotune, out):
    calls, leaves = make_calls(tokens, r, device, dtype, compiled, max_autotune)
    state_before = gpu_state() if device == "cuda" else ""
    results = {}
    for phase_index, phase in enumerate(("forward", "forward_backward")):
        graphs, times = {}, {name: {"wall": [], "host": [], "device": []} for name in calls}
        for name, fns in calls.items():
            call = fns[phase_index]
            for _ in range(3):
                call()  # compiles, plans, caches
            if device == "cuda":
                try:
                    graphs[name] = graph_of(call)
                except Exception as error:  # reported, the other timings kept
                    graphs[name] = f"{type(error).__name__}: {error}"[:300]
        order = list(calls)
        for _ in range(rounds):
            random.shuffle(order)
            for name in order:
                call = calls[name][phase_index]
                times[name]["wall"].append(wall(call, device))
                if device == "cuda":
                    times[name]["host"].append(host(call, device))
                    if not isinstance(graphs[name], str):
                        times[name]["device"].append(device_time(graphs[name]))
        for name in calls:
            row = {"tokens": tokens, "r": r, "width": WIDTH, "dtype": str(dtype).removeprefix("torch."),
                   "phase": phase, "implementation": name, "rounds": rounds,
                   **{f"{k}_us": statistics.median(v) * 1e6 for k, v in times[name].items() if v}}
            if device == "cuda":
                row["launches"] = launches(calls[name][phase_index])
                if isinstance(graphs[name], str):
                    row["graph_error"] = graphs[name]
            if phase == "forward_backward":
                params = leaves[1:]
                row["saved_bytes"], _ = saved_bytes(lambda: calls[name][2](*leaves), exclude=params)
            row["gpu_before"], row["gpu_after"] = state_before, gpu_state() if device == "cuda" else ""
            out.write(json.dumps(row) + "\n")
            out.flush()
            results[(phase, name)] = row
    return results


def summary(results, tokens, r):
    lines = [f"T={tokens} r={r}:"]
    for phase in ("forward", "forward_backward"):
        eager = results.get((phase, "eager"), {})
        for (p, name), row in results.items():
            if p != phase:
                continue
            parts = [f"{k[:-3]} {row[k]:.1f} us" for k in ("device_us", "host_us", "wall_us") if k in row]
            if name != "eager" and "device_us" in row and "device_us" in eager:
                parts.append(f"device/eager {row['device_us'] / eager['device_us']:.2f}")
            if "launches" in row:
                parts.append(f"{row['launches']} launches")
            if "saved_bytes" in row and eager.get("saved_bytes"):
                parts.append(f"saved/eager {row['saved_bytes'] / eager['saved_bytes']:.2f}")
            lines.append(f"  {phase:17s} {name:22s} " + ", ".join(parts))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jsonl", required=True)
    parser.add_argument("--shapes", default="18464x256,18464x64,18464x512,1280x256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-autotune", action="store_true")
    parser.add_argument("--compile-all", action="store_true", help="torch.compile at every shape (default: the first)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
    with open(args.jsonl, "a") as out:
        for index, shape in enumerate(args.shapes.split(",")):
            tokens, r = map(int, shape.split("x"))
            first = index == 0
            results = measure_shape(tokens, r, args.device, dtype, args.rounds, first or args.compile_all,
                                    args.max_autotune and first, out)
            print(summary(results, tokens, r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
