"""A Markdown table of pytest-benchmark JSON files (several runs of the suites merge into one table): per
case, the median time (the CUDA-event median on GPU) and bytes saved for backward of each implementation, the
best fused one against eager and, where both CUDA kernel kinds ran, the opt-in row-in-registers kernels against
the general ones (what decides FASTADAPTER_CUDA_PACKED_ROWS's default); where the runs recorded them, the case's
two floors (roofline.py) and eager and the best fused implementation against each: the roofline floor, and the
time of the phase's GEMMs alone at the case's shapes — each implementation against the GEMMs timed right after
it, so that on a drifting machine both sides of that ratio saw the same minute.

    python benchmarks/summarize.py BENCHMARKS_JSON [MORE_JSON ...]
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

    def own_ms(impl):  # the denominator is that implementation's time in the same case
        return lambda group, _: cases[group][impl]["ms"] if impl in cases[group] else None

    # (name, numerator implementations, the denominator for (case, numerator)); a cell takes the best numerator
    ratios = [("best fused / eager", FUSED, own_ms("eager"))]
    if {"cuda", "cuda_packed"} <= set(impls):
        ratios.append(("cuda_packed / cuda", ("cuda_packed",), own_ms("cuda")))
    if floors:
        ratios += [(f"{side} / floor", numerators, lambda group, _: floors.get(group))
                   for side, numerators in (("eager", ("eager",)), ("best fused", FUSED))]
    if gemms:
        ratios += [(f"{side} / GEMMs", numerators, lambda group, impl: cases[group][impl]["gemms_ms"])
                   for side, numerators in (("eager", ("eager",)), ("best fused", FUSED))]
    references = [("floor", floors)] * bool(floors) + [("GEMMs", gemms)] * bool(gemms)
    lines = ["| case | " + " | ".join([f"{i}: ms (saved MiB)" for i in impls] + [f"{name}: ms" for name, _ in references]
                                      + [name for name, _, _ in ratios]) + " |",
             "|---|" + "---:|" * (len(impls) + len(references) + len(ratios))]
    for group, by_impl in sorted(cases.items()):
        cells = [f"{by_impl[i]['ms']:.3f} ({by_impl[i]['saved_mib']:.1f})" if i in by_impl else "—" for i in impls]
        cells += [f"{values[group]:.3f}" if group in values else "—" for _, values in references]
        for _, numerators, denominator in ratios:
            found = [by_impl[i]["ms"] / d for i in numerators if i in by_impl and (d := denominator(group, i))]
            cells.append(f"{min(found):.2f}" if found else "—")
        lines.append(f"| {group} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(*map(Path, sys.argv[1:])))
