"""A Markdown table of pytest-benchmark JSON files (several runs of the suites merge into one table): per
case, the median time (the CUDA-event median on GPU) and bytes saved for backward of each implementation, the
best fused one against eager and, where both CUDA kernel kinds ran, the opt-in row-in-registers kernels against
the general ones (what decides FASTADAPTER_CUDA_PACKED_ROWS's default).

    python benchmarks/summarize.py BENCHMARKS_JSON [MORE_JSON ...]
"""

import json
import sys
from pathlib import Path

ORDER = ("eager", "compile", "cpu", "cuda", "cuda_packed", "triton")


def table(*paths: Path) -> str:
    rows: dict[str, dict] = {}
    for b in (b for path in paths for b in json.loads(path.read_text())["benchmarks"]):
        info = b["extra_info"]
        if "impl" not in info:
            continue
        ms = info.get("cuda_event_median_ms", b["stats"]["median"] * 1e3)
        rows.setdefault(b["group"], {})[info["impl"]] = (ms, info.get("saved_for_backward_bytes", 0) / 2**20)
    impls = [i for i in ORDER if any(i in r for r in rows.values())]
    ratios = [("best fused / eager", ("cpu", "cuda", "cuda_packed", "triton"), "eager")]
    if {"cuda", "cuda_packed"} <= set(impls):
        ratios.append(("cuda_packed / cuda", ("cuda_packed",), "cuda"))
    lines = ["| case | " + " | ".join(f"{i}: ms (saved MiB)" for i in impls) + " | "
             + " | ".join(name for name, _, _ in ratios) + " |", "|---|" + "---:|" * (len(impls) + len(ratios))]
    for group, by_impl in sorted(rows.items()):
        cells = [f"{by_impl[i][0]:.3f} ({by_impl[i][1]:.1f})" if i in by_impl else "—" for i in impls]
        for _, numerators, denominator in ratios:
            times = [by_impl[i][0] for i in numerators if i in by_impl]
            cells.append(f"{min(times) / by_impl[denominator][0]:.2f}" if times and denominator in by_impl else "—")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(*map(Path, sys.argv[1:])))
