"""A Markdown table of pytest-benchmark JSON files (several runs of the suites merge into one table): per
case, the median time (the CUDA-event median on GPU) and bytes saved for backward of each implementation, the
best fused one against eager and, where both CUDA kernel kinds ran, the opt-in row-in-registers kernels against
the general ones (what decides FASTADAPTER_CUDA_PACKED_ROWS's default); where the runs recorded it, the case's
roofline floor (roofline.py) and eager and the best fused implementation against it.

    python benchmarks/summarize.py BENCHMARKS_JSON [MORE_JSON ...]
"""

import json
import sys
from pathlib import Path

ORDER = ("eager", "compile", "cpu", "cuda", "cuda_packed", "triton")
FUSED = ("cpu", "cuda", "cuda_packed", "triton")
FLOOR = "floor"  # the case's roofline floor, beside the implementations' times


def table(*paths: Path) -> str:
    rows: dict[str, dict] = {}
    floors: dict[str, float] = {}
    for b in (b for path in paths for b in json.loads(path.read_text())["benchmarks"]):
        info = b["extra_info"]
        if "impl" not in info:
            continue
        ms = info.get("cuda_event_median_ms", b["stats"]["median"] * 1e3)
        rows.setdefault(b["group"], {})[info["impl"]] = (ms, info.get("saved_for_backward_bytes", 0) / 2**20)
        if "floor_ms" in info:  # the same for every implementation of a case
            floors[b["group"]] = info["floor_ms"]
    impls = [i for i in ORDER if any(i in r for r in rows.values())]
    ratios = [("best fused / eager", FUSED, "eager")]
    if {"cuda", "cuda_packed"} <= set(impls):
        ratios.append(("cuda_packed / cuda", ("cuda_packed",), "cuda"))
    if floors:
        ratios += [("eager / floor", ("eager",), FLOOR), ("best fused / floor", FUSED, FLOOR)]
    lines = ["| case | " + " | ".join(f"{i}: ms (saved MiB)" for i in impls) + (" | floor: ms" if floors else "")
             + " | " + " | ".join(name for name, _, _ in ratios) + " |",
             "|---|" + "---:|" * (len(impls) + bool(floors) + len(ratios))]
    for group, by_impl in sorted(rows.items()):
        times = {i: ms for i, (ms, _) in by_impl.items()}
        if group in floors:
            times[FLOOR] = floors[group]
        cells = [f"{by_impl[i][0]:.3f} ({by_impl[i][1]:.1f})" if i in by_impl else "—" for i in impls]
        if floors:
            cells.append(f"{times[FLOOR]:.3f}" if FLOOR in times else "—")
        for _, numerators, denominator in ratios:
            ours = [times[i] for i in numerators if i in times]
            cells.append(f"{min(ours) / times[denominator]:.2f}" if ours and denominator in times else "—")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(*map(Path, sys.argv[1:])))
