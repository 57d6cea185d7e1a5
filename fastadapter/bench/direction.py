"""Verdicts on what a `fastadapter bench` report measured.

Does the paper's direction hold on this machine? Adapters fine-tune BLIP in less memory and less time per step
than full fine-tuning (§4.2). Each adapter mode is judged against mode (a) on what the run measured, with its
evidence and, from the step's phases and the training state, why.

Time: from a paired run of the mode against (a) when there is one, decided when the 95% interval of the
per-pair median ratio lies below or above 1 and a sign test on the pairs agrees at p <= 0.05 (6 pairs or
more). Otherwise from the two separate processes, only when every step of one is faster than every step of the
other and so many steps make that unlikely by chance (an exact rank test; 4 steps each or more), and marked
"(unpaired)": the machine's drift between the processes can do the same (on a shared 2-core guest separate
processes gave (b)/(a) 0.87-1.38, paired runs 1.17-1.21). Anything else is "not resolved", with the command that
would resolve it.
Memory: the ratio of the peaks (they repeat within a few percent between runs).
fastadapter's own target, fused adapters at least as fast as eager ones and saving less for backward, is judged
the same way for each fused/eager pair measured.
A paired run alone (say `--modes c --pairs c/b`) is judged on time; the memory or saved-bytes ratio then needs
both modes' own runs and says "not measured".
"""

from __future__ import annotations

import math
import random
import statistics

import torch

ADAPTER_MODES = ("b", "b-text", "c", "c-text", "e", "c-lean", "b-lean")
VISION_MODES = {"b", "c", "e", "c-lean", "b-lean"}  # adapters in the vision tower as well
FUSED_PAIRS = (("c", "b"), ("c-text", "b-text"), ("c-lean", "b"))  # fused (and lean) against eager, same towers
HOLDS, FAILS, UNRESOLVED, NOT_MEASURED = "holds", "does not hold", "not resolved", "not measured"
UNPAIRED = " (unpaired)"  # a verdict from separate processes, which the machine's drift between them can also make
ALPHA = 0.05


def separation_p(n: int, m: int) -> float:
    """Two-sided p-value of every one of n steps being faster (or every one slower) than every one of m others,
    were all n + m equally likely to be the fastest (Mann-Whitney U = 0)."""
    return min(1.0, 2 / math.comb(n + m, n))


def sign_test_p(k: int, n: int) -> float:
    """Two-sided exact p-value of k of n pairs going one way, were each pair equally likely to go either way."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _p(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.0e}"


def _measured(report: dict, mode: str) -> bool:
    return "step_s" in report["results"].get(mode, {})


def paired_run(report: dict, numerator: str, denominator: str) -> dict | None:
    """The paired run numerator/denominator, when one ran and did not fail."""
    pair = report["paired"].get(f"{numerator}/{denominator}")
    return pair if pair and "failed" not in pair else None


def _judged(report: dict, numerator: str, denominator: str) -> tuple[bool, bool]:
    """(whether the two modes can be compared at all, whether both have their own run): time needs a paired run
    or both own runs; memory and saved bytes need both own runs."""
    own = _measured(report, numerator) and _measured(report, denominator)
    return own or paired_run(report, numerator, denominator) is not None, own


def compare_times(report: dict, numerator: str, denominator: str) -> dict:
    """Step time of numerator against denominator: ratio, side ("faster", "slower" or None: not resolved), what it
    was judged from ("paired" or "separate") and the evidence, as the module docstring says."""
    pair = paired_run(report, numerator, denominator)
    if pair:
        spread = pair["pairs_wall_time"]
        low, high = spread["median_ci95"]
        p = sign_test_p(spread["numerator_faster"], spread["pairs"])
        side = "faster" if high < 1 else "slower" if low > 1 else None
        return {"ratio": pair["ratio"], "side": side if p <= ALPHA else None, "from": "paired",
                "evidence": f"one process, {spread['pairs']} pairs of steps, ({numerator}) faster in "
                            f"{spread['numerator_faster']} (sign test p = {_p(p)}); the per-pair ratio's median in "
                            f"[{low:.3f}, {high:.3f}] (95%)"}
    ours, theirs = (report["results"][m]["step_times_s"] for m in (numerator, denominator))
    out = {"ratio": statistics.median(ours) / statistics.median(theirs), "side": None, "from": "separate"}
    side = "faster" if max(ours) < min(theirs) else "slower" if min(ours) > max(theirs) else None
    if side is None:
        return {**out, "evidence": "separate processes: the step times overlap"}
    p = separation_p(len(ours), len(theirs))
    counts = f"{len(ours)} and {len(theirs)} steps"
    if p > ALPHA:
        return {**out, "evidence": f"separate processes: every step of ({numerator}) {side}, but {counts} are too "
                                   f"few (rank test p = {p:.2f})"}
    return {**out, "side": side,
            "evidence": f"separate processes, {counts}: every step of ({numerator}) {side} (rank test p = {_p(p)})"}


def _verdict(compared: dict, words: dict[str | None, str]) -> str:
    """compared's side in the given words, marked (unpaired) when separate processes decided it."""
    unpaired = compared["side"] is not None and compared["from"] == "separate"
    return words[compared["side"]] + (UNPAIRED if unpaired else "")


def time_verdict(report: dict, mode: str) -> dict:
    """Step time of mode against (a), with the paper's direction as verdict."""
    compared = compare_times(report, mode, "a")
    return {**compared, "verdict": _verdict(compared, {"faster": HOLDS, "slower": FAILS, None: UNRESOLVED})}


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def state(result: dict, dtype: str) -> str:
    """What a mode keeps that scales with what it trains, and the activations it saves."""
    per_parameter = 3 * getattr(torch, dtype).itemsize  # grad + AdamW's two moments
    return (f"trains {result['trainable']:,} parameters ({_size(per_parameter * result['trainable'])} of grads and "
            f"AdamW moments in {dtype}) and saves {_size(result['saved_bytes'])} of activations for backward")


def _phases(report: dict, mode: str) -> dict[str, dict[str, float]]:
    """Median phase seconds of mode and (a): from their paired run when there is one (same process)."""
    pair = paired_run(report, mode, "a")
    if pair:
        return pair["phases_s"]
    return {m: report["results"][m]["phases_s"] for m in (mode, "a")}


def why(report: dict, mode: str) -> str:
    """Where the mode's step time and memory differ from (a)'s: time per phase, what it trains and saves."""
    phases = _phases(report, mode)
    parts = ["per step " + ", ".join(
        f"{name} {phases[mode][name] * 1e3:.0f} against {phases['a'][name] * 1e3:.0f} ms "
        f"({(phases[mode][name] - phases['a'][name]) * 1e3:+.0f})" for name in phases[mode]) + ";"]
    if _measured(report, mode):
        parts.append(state(report["results"][mode], report["preset"]["dtype"]) + ".")
    parts.append("Adapters in the vision tower need a backward pass through the vision encoder, which (a) freezes "
                 "and skips, and keep its activations for it." if mode in VISION_MODES else
                 "Like (a), it skips the backward pass through the vision encoder.")
    return " ".join(parts)


def fused_verdicts(report: dict) -> dict[str, dict]:
    """fastadapter's own target per fused/eager pair measured: fused adapters at least as fast as eager ones, and
    saving less for backward."""
    results, out = report["results"], {}
    for fused, eager in FUSED_PAIRS:
        comparable, own = _judged(report, fused, eager)
        if not comparable:
            continue
        compared = compare_times(report, fused, eager)
        if own:
            ratio = results[fused]["saved_bytes"] / results[eager]["saved_bytes"]
            saved = {"ratio": ratio, "verdict": "less" if ratio < 1 else "not less"}
        else:
            saved = {"ratio": None, "verdict": f"{NOT_MEASURED} (needs --modes {fused},{eager})"}
        out[f"{fused}/{eager}"] = {
            "time": {**compared, "verdict": _verdict(compared, {"faster": "faster", "slower": "slower",
                                                                None: "no difference resolved"})},
            "saved": saved}
    return out


def verdicts(report: dict) -> dict[str, dict]:
    """Per adapter mode compared with (a) (both own runs, or their paired run): memory and time against (a), each
    with ratio and verdict, and why."""
    results, out = report["results"], {}
    for mode in ADAPTER_MODES:
        comparable, own = _judged(report, mode, "a")
        if not comparable:
            continue
        if own:
            ratio = results[mode]["peak_bytes"] / results["a"]["peak_bytes"]
            memory = {"ratio": ratio, "verdict": HOLDS if ratio < 1 else FAILS, "evidence": results[mode]["peak_kind"]}
        else:  # two models in one process: their peaks are not apart
            memory = {"ratio": None, "verdict": NOT_MEASURED, "evidence": f"needs --modes a,{mode}"}
        out[mode] = {"memory": memory, "time": time_verdict(report, mode), "why": why(report, mode)}
    return out


def _label(report: dict, mode: str) -> str:
    label = report["results"].get(mode, {}).get("label")  # a mode only paired has no run of its own
    return f" {label}" if label else ""


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def markdown(report: dict) -> list[str]:
    """The report's section on the paper's direction (lines)."""
    verdicts = report.get("direction") or {}
    lines = ["", "Does the paper's direction hold here? (adapters: less memory and less time per step than (a), "
             "full fine-tuning of the decoder)", ""]
    if not verdicts:
        return lines + ["Not judged: mode (a) and at least one adapter mode must both be measured, or paired "
                        "(`--pairs b/a`)."]
    lines += ["| mode | peak memory / (a) | memory | step time / (a) | time | time judged from |",
              "|---|---:|---|---:|---|---|"]
    for mode, v in verdicts.items():
        lines.append(f"| {mode} | {_ratio(v['memory']['ratio'])} | {v['memory']['verdict']} | "
                     f"{v['time']['ratio']:.3f} | {v['time']['verdict']} | {v['time']['evidence']} |")
    separate = [m for m, v in verdicts.items() if v["time"]["from"] == "separate"]
    if separate:
        lines += ["", "Judged from separate processes, where the machine's drift between them can decide as much as "
                  "the modes do (hence \"(unpaired)\"): "
                  f"`--pairs {','.join(f'{m}/a' for m in separate)} --steps 20` times each against (a) in one "
                  "process, their steps alternating."]
    lines += ["", f"Why: (a) {state(report['results']['a'], report['preset']['dtype'])}. Against it:"
              if _measured(report, "a") else "Why, against (a):"]
    lines += [f"- ({mode}){_label(report, mode)}: {v['why']}" for mode, v in verdicts.items()]
    return lines


def fused_markdown(report: dict) -> list[str]:
    """The report's lines on fused against eager adapters (none when no such pair was measured)."""
    fused = report.get("fused_against_eager") or {}
    if not fused:
        return []
    lines = ["", "Fused against eager adapters (fastadapter's target: at least as fast, less saved for backward):", "",
             "| pair | step time | time | judged from | saved for backward | saved |", "|---|---:|---|---|---:|---|"]
    for name, v in fused.items():
        lines.append(f"| {name} | {v['time']['ratio']:.3f} | {v['time']['verdict']} | {v['time']['evidence']} | "
                     f"{_ratio(v['saved']['ratio'])} | {v['saved']['verdict']} |")
    return lines


def pair_statistics(den: list[float], num: list[float]) -> dict:
    """How the per-pair ratios num/den spread: quartiles, a 95% bootstrap interval of their median (2000
    resamples, seeded) and in how many pairs the numerator's step was faster."""
    ratios = [n / d for d, n in zip(den, num)]
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return {"quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3,
            "median_ci95": [medians[49], medians[1950]], "numerator_faster": sum(r < 1 for r in ratios),
            "pairs": len(ratios)}
