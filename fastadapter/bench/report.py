"""The bench's report: the Markdown table and verdicts, the ratios between modes, the plot."""

from __future__ import annotations

import datetime
import platform
import subprocess
from pathlib import Path

import torch

from . import direction
from .modes import MODES, PAPER


def failures(report: dict) -> list[str]:
    """The modes and the paired runs that raised instead of measuring."""
    failed = [mode for mode, r in report["results"].items() if r.get("failed")]
    return failed + [f"paired {name}" for name, r in report["paired"].items() if "failed" in r]


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for name, (num, den) in {"c/b": ("c", "b"), "b/a": ("b", "a"), "b-text/a": ("b-text", "a"),
                             "c-text/a": ("c-text", "a"), "c/a": ("c", "a"), "e/b": ("e", "b"),
                             "c-lean/b": ("c-lean", "b"), "c-lean/a": ("c-lean", "a")}.items():
        if num in results and den in results and "step_s" in results[num] and "step_s" in results[den]:
            out[name] = {"time": results[num]["step_s"] / results[den]["step_s"],
                         "saved": results[num]["saved_bytes"] / results[den]["saved_bytes"],
                         "memory": results[num]["peak_bytes"] / results[den]["peak_bytes"]}
    return out


def source_commit() -> str:
    """The source tree's commit when the bench runs from a checkout ("+changes" if it has any), else "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def machine() -> dict:
    info = {"date": datetime.date.today().isoformat(), "commit": source_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads()}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _pair_spread(name: str, numerator: str, stats: dict) -> str:
    low, high = stats["median_ci95"]
    return (f"per-pair {name} quartiles {' / '.join(f'{q:.3f}' for q in stats['quartiles'])}, 95% bootstrap "
            f"interval of their median [{low:.3f}, {high:.3f}]; ({numerator}) faster in "
            f"{stats['numerator_faster']} of {stats['pairs']} pairs.")


def _paired_lines(name: str, r: dict) -> list[str]:
    if "failed" in r:
        return ["", f"{name} in one process: failed: {r['failed']}"]
    num, den = r["numerator"], r["denominator"]
    lines = ["", f"({num}) against ({den}) in one process, {r['how']} ({r['steps_each']} steps each): "
             f"{r['step_s'][num]:.3f} s against {r['step_s'][den]:.3f} s per step, {name} = {r['ratio']:.3f}; "
             + _pair_spread(name, num, r["pairs_wall_time"])]
    if "pairs_process_cpu_time" in r:
        lines.append("By the process's CPU time (which time taken by a shared machine's other guests does not "
                     "inflate): " + _pair_spread(name, num, r["pairs_process_cpu_time"]))
    return lines


def _adapter_count_lines(report: dict) -> list[str]:
    """Why the adapters' trainable count is not the paper's: how many adapters this model has, and what the
    paper's count of them would train at this bottleneck."""
    measured = [r for r in report["results"].values() if r.get("adapters")]
    if not measured:
        return []
    most = max(measured, key=lambda r: r["adapters"])
    each = most["trainable"] // most["adapters"]
    paper = PAPER["adapters"]
    return ["", f"({most['mode']}) trains {most['trainable']:,} parameters in {most['adapters']} adapters of "
            f"{each:,} at r = {report['preset']['bottleneck']} ({most['label']}; BlipForConditionalGeneration has no "
            f"text encoder, so every tower here is the vision encoder and the text decoder). The paper's {paper} "
            f"adapters (§3.3.2: 12 in the image encoder, 36 in the text encoder and decoder) of this size would train "
            f"{paper * each:,}; it does not give its r, and its {PAPER['trainable_adapters']:,} is "
            f"{PAPER['trainable_adapters'] // paper:,} per adapter."]


def markdown(report: dict) -> str:
    preset = report["preset"]
    model = (f"checkpoint {report['checkpoint']}" if report.get("checkpoint") else
             "BLIP-base shapes from BlipConfig, random weights")
    where = report["machine"].get("gpu", report["machine"]["cpu"])
    lines = [f"fastadapter bench — {report['machine']['date']}, {where}"
             f", torch {report['machine']['torch']}; {model}; preset {report['preset_name']}: {preset['dtype']}, batch "
             f"{preset['batch']} at {preset['image_size']} px, median of {preset['steps']} steps after "
             f"{preset['warmup']} warm-up, {report.get('optimizer', 'AdamW')}"
             + (", CPU denormals flushed" if preset["device"] == "cpu" else ""),
             "", "| mode | trains | trainable params | step (s), median [min–max] | images/s | saved for backward | "
             "peak memory | 50 epochs × 800 images (projected) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for mode, r in report["results"].items():
        if "step_s" not in r:
            lines.append(f"| {mode} | {MODES[mode]} | | | | | | {r['note']} |")
            continue
        projected = 50 * 800 / r["images_per_s"]
        lines.append(f"| {mode} | {r['label']} | {r['trainable']:,} | {r['step_s']:.3f} [{r['step_min_s']:.3f}–"
                     f"{r['step_max_s']:.3f}] | {r['images_per_s']:.2f} | {r['saved_bytes'] / 2**20:.0f} MiB | "
                     f"{r['peak_bytes'] / 2**30:.2f} GiB | {projected / 60:.1f} min |")
    peak_kind = next((r["peak_kind"] for r in report["results"].values() if "peak_kind" in r), "peak memory")
    lines += ["", "Saved for backward: bytes of the activations autograd keeps in one forward (parameters "
              f"excluded). Peak memory is the {peak_kind}. Projected time = 40,000 images ÷ measured images/s "
              "(an extrapolation, not a run). Modes run one after "
              "another in fresh processes: differences within the min–max spreads are noise, not a verdict."]
    if report["ratios"]:  # none unless both modes of a ratio ran
        lines += ["", "| ratio | step time, separate processes | step time, paired (one process) | saved for backward "
                  "| peak memory |", "|---|---:|---:|---:|---:|"]
    paired = {name: direction.paired_run(report, *name.split("/")) for name in report["ratios"]}
    for name, r in report["ratios"].items():
        time = f"{paired[name]['ratio']:.3f}" if paired[name] else "—"
        lines.append(f"| {name} | {r['time']:.3f} | {time} | {r['saved']:.3f} | {r['memory']:.3f} |")
    if any(paired.values()):
        lines += ["", "Where a ratio was also timed paired (the two modes' steps alternating in one process, below), "
                  "that figure is the measurement: the machine's drift between processes cannot bias it."]
    for name, r in report["paired"].items():
        lines += _paired_lines(name, r)
    lines += direction.fused_markdown(report)
    lines += direction.markdown(report)
    full = report["results"].get("a", {})
    if "untied_trainable" in full:
        lines += ["", f"(a) trains {full['trainable']:,} parameters with the LM-head weight tied to the word "
                  f"embeddings; {full['untied_trainable']:,} counting it separately, as the paper did."]
    lines += _adapter_count_lines(report)
    p = PAPER
    lines += ["", "The paper (§4.2), for comparison: full fine-tuning trains "
              f"{p['trainable_full']:,} parameters, adapters {p['trainable_adapters']:,}; memory {p['memory_full']} "
              f"against {p['memory_adapters']}; time {p['time_full']} against {p['time_adapters']}."]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> bool:
    """Bar charts of step time and peak memory per measured mode; False (and no file) when none measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = {m: r for m, r in report["results"].items() if "step_s" in r}
    if not measured:
        return False
    names = list(measured)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    medians = [measured[m]["step_s"] for m in names]
    spread = [[med - measured[m].get("step_min_s", med) for m, med in zip(names, medians)],
              [measured[m].get("step_max_s", med) - med for m, med in zip(names, medians)]]
    left.bar(names, medians, yerr=spread, capsize=4, color="#4C72B0")
    left.set_ylabel("median step time (s), bars: min–max")
    left.set_title("time per training step")
    right.bar(names, [measured[m]["peak_bytes"] / 2**30 for m in names], color="#DD8452")
    right.set_ylabel(f"GiB ({next(iter(measured.values()))['peak_kind']})")
    right.set_title("peak memory")
    fig.suptitle(f"fastadapter bench — BLIP, preset {report['preset_name']}, {report['machine']['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
