"""The short table run.sh prints last: fused against eager and torch.compile per shape (CUDA-event medians),
and fastadapter bench's table."""

import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
suites = out / "benchmarks.json"
if suites.exists():
    rows = {}
    for b in json.loads(suites.read_text())["benchmarks"]:
        info = b["extra_info"]
        ms = info.get("do_bench_median_ms", b["stats"]["median"] * 1e3)
        rows.setdefault(b["group"], {})[info["impl"]] = (ms, info.get("saved_for_backward_bytes", 0) / 2**20,
                                                         info.get("peak_allocated_bytes", 0) / 2**20)
    impls = ("eager", "compile", "cuda", "triton")
    print("| case | " + " | ".join(f"{i} ms (saved MiB)" for i in impls) + " |")
    print("|---|" + "---:|" * len(impls))
    for group, by_impl in sorted(rows.items()):
        cells = [f"{by_impl[i][0]:.3f} ({by_impl[i][1]:.0f})" if i in by_impl else "—" for i in impls]
        print(f"| {group} | " + " | ".join(cells) + " |")
bench = out / "bench.md"
if bench.exists():
    print()
    print(bench.read_text())
