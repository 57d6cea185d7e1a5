"""A Markdown table of pytest-benchmark JSON files (several runs of the suites merge into one table): per
case, the median time (the CUDA-event median on GPU) and bytes saved for backward of each implementation.

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
    lines = ["| case | " + " | ".join(f"{i}: ms (saved MiB)" for i in impls) + " | best fused / eager |",
             "|---|" + "---:|" * (len(impls) + 1)]
    for group, by_impl in sorted(rows.items()):
        cells = [f"{by_impl[i][0]:.3f} ({by_impl[i][1]:.1f})" if i in by_impl else "—" for i in impls]
        fused = [by_impl[i][0] for i in ("cpu", "cuda", "cuda_packed", "triton") if i in by_impl]
        ratio = f"{min(fused) / by_impl['eager'][0]:.2f}" if fused and "eager" in by_impl else "—"
        lines.append(f"| {group} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(*map(Path, sys.argv[1:])))
