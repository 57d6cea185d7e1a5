"""The whole-adapter Triton kernels' block configurations timed on a GPU: the winners to record in
kernels/adapter_fused.py's FORWARD_BLOCKS and BACKWARD_BLOCKS, since every GPU machine starts cold (#20).

    python benchmarks/adapter_configs.py --jsonl OUT.jsonl [--bottlenecks 256,64] [--dtypes bf16] [--tokens 18464]
                                         [--budget-s 80]

Keyed on (r class, D, dtype), not on T: T only sets the grid, and a table keyed on it would compile per batch.
Candidates, a small set around the table's ptxas-searched entries: BLOCK_M (the register budget: the forward
holds ~3 float32 (BLOCK_M, BLOCK_R) tiles, the backward ~5), num_warps 4 or 8 (one or two warpgroups), BLOCK_D
(the D chunk each dot streams) and num_stages (software pipelining of those chunk loads). Each is timed through
the backend's own forward or backward function (the backward's two cuBLAS GEMMs and column sums are the same
for every candidate) by CUDA-graph replay, and written as a JSON line as soon as it is timed. A winner must
still pass tests/test_triton_compile_adapter_fused.py (no spills) before it goes into the table.
On CPU (a smoke test of this script, under TRITON_INTERPRET=1) wall times are taken instead.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastadapter.kernels import adapter_fused  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# (BLOCK_M, num_warps, BLOCK_D, num_stages), the tables' layout
CANDIDATES = {False: list(itertools.product((32, 64, 128), (4, 8), (32, 64), (2, 3))),
              True: list(itertools.product((16, 32, 64), (4, 8), (16, 32), (1, 2)))}


def time_call(call, device) -> float:
    """Microseconds per call: CUDA-graph replay on a GPU, the best of a few wall-clock calls on CPU."""
    call()  # compiles the configuration
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench_cudagraph(call, rep=20) * 1e3
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best * 1e6


def phase_calls(tokens, width, r, dtype, device):
    """(forward call, backward call) of the triton backend's whole-adapter functions on fixed inputs."""
    g = torch.Generator().manual_seed(r)
    x = torch.randn(tokens, width, generator=g).to(device, dtype)
    params = [torch.randn(r, width, generator=g) / width ** 0.5, 0.1 * torch.randn(r, generator=g),
              1 + 0.1 * torch.randn(r, generator=g), 0.1 * torch.randn(r, generator=g),
              torch.randn(width, r, generator=g) / r ** 0.5, 0.1 * torch.randn(width, generator=g)]
    w_down, b_down, norm_w, norm_b, w_up, b_up = [p.to(device, dtype) for p in params]
    grad_y = torch.randn(tokens, width, generator=g).to(device, dtype)
    forward_args = (x, w_down, b_down, norm_w, norm_b, w_up, b_up, "gelu", "layernorm", 1e-5, False)
    _, h, mean, rstd = adapter_fused.forward(*forward_args)

    def backward():
        adapter_fused.backward(grad_y, x, h, mean, rstd, w_down, b_down, norm_w, norm_b, w_up, "gelu", "layernorm",
                               1e-5, False, True)

    return (lambda: adapter_fused.forward(*forward_args)), backward


def sweep(tokens, width, r, dtype, device, deadline, limit, out):
    """Times every candidate of both phases at one (r, dtype); returns {phase: (winner, us, table's, its us)}."""
    table_key, rounded = dtype == torch.float32, adapter_fused.block_r(r)
    calls = phase_calls(tokens, width, r, dtype, device)
    winners = {}
    for backward, call in zip((False, True), calls):
        phase = "backward" if backward else "forward"
        table = adapter_fused.BACKWARD_BLOCKS if backward else adapter_fused.FORWARD_BLOCKS
        recorded = table[table_key][rounded]
        timed = {}
        for config in [recorded] + [c for c in CANDIDATES[backward] if c != recorded][:limit]:
            if time.monotonic() > deadline:
                break
            table[table_key][rounded] = config
            adapter_fused.blocks.cache_clear()
            try:
                timed[config] = time_call(call, device)
            except Exception as error:  # a configuration that does not compile or fit: reported, not fatal
                timed[config] = None
                print(f"  {config}: {type(error).__name__}: {str(error)[:120]}", file=sys.stderr)
            finally:
                table[table_key][rounded] = recorded
                adapter_fused.blocks.cache_clear()
            out.write(json.dumps({"r": r, "width": width, "tokens": tokens, "dtype": str(dtype).split(".")[-1],
                                  "phase": phase, "config": config,
                                  "us": timed[config]}) + "\n")
            out.flush()
        ok = {c: us for c, us in timed.items() if us is not None}
        if ok:
            best = min(ok, key=ok.get)
            winners[phase] = (best, ok[best], recorded, ok.get(recorded))
    return winners


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jsonl", required=True)
    parser.add_argument("--bottlenecks", default="256,64")
    parser.add_argument("--dtypes", default="bf16")
    parser.add_argument("--tokens", type=int, default=18464)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--budget-s", type=float, default=80.0, help="stop starting candidates after this")
    parser.add_argument("--limit", type=int, default=len(CANDIDATES[False]), help="candidates per phase")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device, deadline = torch.device(args.device), time.monotonic() + args.budget_s
    Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
    print("| r | dtype | phase | winner (BLOCK_M, num_warps, BLOCK_D, num_stages) | us | table's | table's us |")
    print("|---|---|---|---|---|---|---|")
    with open(args.jsonl, "a") as out:
        for name, r in itertools.product(args.dtypes.split(","), map(int, args.bottlenecks.split(","))):
            for phase, (best, us, recorded, recorded_us) in sweep(args.tokens, args.width, r, DTYPES[name], device,
                                                                  deadline, args.limit, out).items():
                print(f"| {r} | {name} | {phase} | {best} | {us:.1f} | {recorded} | "
                      f"{'-' if recorded_us is None else f'{recorded_us:.1f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
