"""A Markdown table of pytest-benchmark JSON files (several runs of the suites merge into one table): per
case, the median time (the CUDA-event median on GPU) and bytes saved for backward of each implementation, the
best fused one against eager and, where both CUDA kernel kinds ran, the opt-in row-in-registers kernels against
the general ones (what decides FASTADAPTER_CUDA_PACKED_ROWS's default); where the runs recorded them, the case's
two floors (roofline.py) and eager and the best fused implementation against each: the roofline floor, and the
fastest run of the phase's GEMMs alone at the case's shapes, the median of what each implementation's case
recorded (one burst of a shared machine's load then moves none of it).

    python benchmarks/suite_table.py BENCHMARKS_JSON [MORE_JSON ...]
"""

import json
import statistics
import sys
from pathlib import Path

ORDER = ("eager", "compile", "cpu", "cuda", "cuda_packed", "triton")
FUSED = ("cpu", "cuda", "cuda_packed", "triton")


def _cases(paths) -> tuple[dict[str, dict[str, dict]], dict[str, float]]:
    """group -> impl -> {ms, saved_mib, gemms_ms}, and group -> roofline floor (ms)."""
    cases: dict[str, dict[str, dict]] = {}
    floors: dict[str, float] = {}
    for b in (b for path in paths for b in json.loads(path.read_text())["benchmarks"]):
        info = b["extra_info"]
        if "impl" not in info:
            continue
        cases.setdefault(b["group"], {})[info["impl"]] = {
            "ms": info.get("cuda_event_median_ms", b["stats"]["median"] * 1e3),
            "saved_mib": info.get("saved_for_backward_bytes", 0) / 2**20, "gemms_ms": info.get("gemms_ms")}
        if "floor_ms" in info:  # the same for every implementation of a case
            floors[b["group"]] = info["floor_ms"]
    return cases, floors


def table(*paths: Path) -> str:
    cases, floors = _cases(paths)
    impls = [i for i in ORDER if any(i in by_impl for by_impl in cases.values())]
    gemms = {group: statistics.median(g) for group, by_impl in cases.items()
             if (g := [c["gemms_ms"] for c in by_impl.values() if c["gemms_ms"] is not None])}

    references = [("floor", floors)] * bool(floors) + [("GEMMs", gemms)] * bool(gemms)
    # (name, numerator implementations, the denominator: an implementation or a reference); a cell takes the best
    # numerator that ran
    ratios = [("best fused / eager", FUSED, "eager")]
    if {"cuda", "cuda_packed"} <= set(impls):
        ratios.append(("cuda_packed / cuda", ("cuda_packed",), "cuda"))
    ratios += [(f"{side} / {name}", numerators, name) for name, _ in references
               for side, numerators in (("eager", ("eager",)), ("best fused", FUSED))]
    columns = ([f"{i}: ms (saved MiB)" for i in impls] + [f"{name}: ms" for name, _ in references]
               + [name for name, _, _ in ratios])
    lines = ["| case | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * (len(impls) + len(references) + len(ratios))]
    for group, by_impl in sorted(cases.items()):
        times = {i: c["ms"] for i, c in by_impl.items()}
        times.update({name: values[group] for name, values in references if group in values})
        cells = [f"{by_impl[i]['ms']:.3f} ({by_impl[i]['saved_mib']:.1f})" if i in by_impl else "—" for i in impls]
        cells += [f"{times[name]:.3f}" if name in times else "—" for name, _ in references]
        for _, numerators, denominator in ratios:
            ours = [times[i] for i in numerators if i in times]
            cells.append(f"{min(ours) / times[denominator]:.2f}" if ours and denominator in times else "—")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(*map(Path, sys.argv[1:])))
