"""Does the paper's direction hold on this machine? Adapters fine-tune BLIP in less memory and less time per
step than full fine-tuning (§4.2). Each adapter mode of a `fastadapter bench` report is judged against mode (a)
on what the run measured, with its evidence and, from the step's phases and the training state, why.

Time: from a paired run of the mode against (a) when there is one (the 95% interval of the per-pair median
ratio lies below 1, above 1, or straddles it); otherwise from the two separate processes, which decide only
when every step of one is faster than every step of the other and so many steps make that unlikely by chance
(an exact rank test). Anything else is "not resolved", with the command that would resolve it.
Memory: the ratio of the peaks (they repeat to the third digit between runs).
"""

from __future__ import annotations

import math
import statistics

import torch

ADAPTER_MODES = ("b", "b-text", "c", "c-text", "e")
VISION_MODES = {"b", "c", "e"}  # adapters in the vision tower as well
HOLDS, FAILS, UNRESOLVED = "holds", "does not hold", "not resolved"
ALPHA = 0.05


def separation_p(n: int, m: int) -> float:
    """Two-sided p-value of every one of n steps being faster (or every one slower) than every one of m others,
    were all n + m equally likely to be the fastest (Mann-Whitney U = 0)."""
    return min(1.0, 2 / math.comb(n + m, n))


def time_verdict(report: dict, mode: str) -> dict:
    """Step time of mode against (a): ratio, verdict, and what it was judged from ("paired" or "separate")."""
    pair = report["paired"].get(f"{mode}/a")
    if pair and "failed" not in pair:
        low, high = pair["pairs_wall_time"]["median_ci95"]
        return {"ratio": pair["ratio"], "verdict": HOLDS if high < 1 else FAILS if low > 1 else UNRESOLVED,
                "from": "paired", "evidence": f"one process, {pair['steps_each']} pairs of steps: the per-pair "
                                              f"ratio's median in [{low:.3f}, {high:.3f}] (95%)"}
    ours, full = report["results"][mode]["step_times_s"], report["results"]["a"]["step_times_s"]
    out = {"ratio": statistics.median(ours) / statistics.median(full), "verdict": UNRESOLVED, "from": "separate"}
    side = "faster" if max(ours) < min(full) else "slower" if min(ours) > max(full) else None
    if side is None:
        return {**out, "evidence": "separate processes: the step times overlap"}
    p = separation_p(len(ours), len(full))
    counts = f"{len(ours)} and {len(full)} steps"
    if p > ALPHA:
        return {**out, "evidence": f"separate processes: every step of ({mode}) {side}, but {counts} are too few "
                                   f"(rank test p = {p:.2f})"}
    return {**out, "verdict": HOLDS if side == "faster" else FAILS,
            "evidence": f"separate processes, {counts}: every step of ({mode}) {side} (rank test p = {p:.3f})"}


def _size(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def state(result: dict, dtype: str) -> str:
    """What a mode keeps that scales with what it trains, and the activations it saves."""
    per_parameter = 3 * torch.empty(0, dtype=getattr(torch, dtype)).element_size()  # grad + AdamW's two moments
    return (f"trains {result['trainable']:,} parameters ({_size(per_parameter * result['trainable'])} of grads and "
            f"AdamW moments in {dtype}) and saves {_size(result['saved_bytes'])} of activations for backward")


def _phases(report: dict, mode: str) -> dict[str, dict[str, float]] | None:
    """Median phase seconds of mode and (a): from their paired run when there is one (same process)."""
    pair = report["paired"].get(f"{mode}/a")
    if pair and "failed" not in pair and "phases_s" in pair:
        return pair["phases_s"]
    results = report["results"]
    if "phases_s" in results[mode] and "phases_s" in results["a"]:
        return {mode: results[mode]["phases_s"], "a": results["a"]["phases_s"]}
    return None


def why(report: dict, mode: str) -> str:
    """Where the mode's step time and memory differ from (a)'s: time per phase, what it trains and saves."""
    parts = []
    phases = _phases(report, mode)
    if phases:
        parts.append("per step " + ", ".join(
            f"{name} {phases[mode][name] * 1e3:.0f} against {phases['a'][name] * 1e3:.0f} ms "
            f"({(phases[mode][name] - phases['a'][name]) * 1e3:+.0f})" for name in phases[mode]) + ";")
    parts.append(state(report["results"][mode], report["preset"]["dtype"]) + ".")
    parts.append("Adapters in the vision tower need a backward pass through the vision encoder, which (a) freezes "
                 "and skips, and keep its activations for it." if mode in VISION_MODES else
                 "Like (a), it skips the backward pass through the vision encoder.")
    return " ".join(parts)


def verdicts(report: dict) -> dict[str, dict]:
    """Per measured adapter mode: memory and time against (a), each with ratio and verdict, and why."""
    results = report["results"]
    if "step_s" not in results.get("a", {}):
        return {}
    out = {}
    for mode in ADAPTER_MODES:
        if "step_s" not in results.get(mode, {}):
            continue
        memory = results[mode]["peak_bytes"] / results["a"]["peak_bytes"]
        out[mode] = {"memory": {"ratio": memory, "verdict": HOLDS if memory < 1 else FAILS,
                                "evidence": results[mode]["peak_kind"]},
                     "time": time_verdict(report, mode), "why": why(report, mode)}
    return out


def markdown(report: dict) -> list[str]:
    """The report's section on the paper's direction (lines)."""
    verdicts = report.get("direction") or {}
    lines = ["", "Does the paper's direction hold here? (adapters: less memory and less time per step than (a), "
             "full fine-tuning of the decoder)", ""]
    if not verdicts:
        return lines + ["Not judged: mode (a) and at least one adapter mode must both be measured."]
    lines += ["| mode | peak memory / (a) | memory | step time / (a) | time | time judged from |",
              "|---|---:|---|---:|---|---|"]
    for mode, v in verdicts.items():
        lines.append(f"| {mode} | {v['memory']['ratio']:.3f} | {v['memory']['verdict']} | {v['time']['ratio']:.3f} | "
                     f"{v['time']['verdict']} | {v['time']['evidence']} |")
    separate = [m for m, v in verdicts.items() if v["time"]["from"] == "separate"]
    if separate:
        lines += ["", "Separate processes do not cover the machine's drift between them; "
                  f"`--pairs {','.join(f'{m}/a' for m in separate)}` times each against (a) in one process, their "
                  "steps alternating (with `--steps 20` or more where a verdict is not resolved)."]
    lines += ["", f"Why: (a) {state(report['results']['a'], report['preset']['dtype'])}. Against it:"]
    lines += [f"- ({mode}) {report['results'][mode]['label']}: {v['why']}" for mode, v in verdicts.items()]
    return lines
