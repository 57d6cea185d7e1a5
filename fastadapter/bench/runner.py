"""`fastadapter bench`: each mode measured in a fresh process, then the pairs; bench.json after every job, the
Markdown report and bench.png at the end (modes.py says what the modes are)."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path

import torch

from . import direction, steps
from . import report as reports
from .models import OPTIMIZER, preset_for_checkpoint
from .modes import DEFAULT_MODES, DEFAULT_PAIRS, MODES, NOT_BUILT, PAPER, PRESETS, Preset, check_pair


def resolve_preset(preset_name: str, checkpoint: str | None, overrides: dict) -> Preset:
    chosen = {k: v for k, v in overrides.items() if v is not None}
    if "steps" in chosen:
        chosen.setdefault("pair_steps", None)  # steps asked for: pairs take as many
    preset = Preset(**{**asdict(PRESETS[preset_name]), **chosen})
    if checkpoint:
        preset = preset_for_checkpoint(preset, checkpoint, overrides.get("image_size"))
    if preset.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("fastadapter bench: preset 'gpu' needs a CUDA device, and none is visible")
    return preset


def schedule(modes: list[str] | None, pairs: list[tuple[str, str]] | None):
    """(modes, pairs, riding, own_process): a pair rides in its numerator's process when that mode runs (one
    process and one model fewer; one pair per mode); the others get their own process."""
    modes = modes or list(DEFAULT_MODES)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"fastadapter bench: unknown mode(s) {unknown}; expected some of {list(MODES)}")
    if pairs is None:
        pairs = [pair for pair in DEFAULT_PAIRS if set(pair) <= set(modes)]
    pairs = list(dict.fromkeys(pairs))
    for num, den in pairs:
        check_pair(num, den)
    riding = {}
    for num, den in pairs:
        if num in modes:
            riding.setdefault(num, den)
    return modes, pairs, riding, [(num, den) for num, den in pairs if riding.get(num) != den]


class _Run:
    """One bench run's report, written to out/bench.json after every job, so an interrupted run keeps what it
    measured."""

    def __init__(self, preset_name: str, preset: Preset, checkpoint: str | None, out: Path, riding: dict):
        self.preset, self.checkpoint, self.out, self.riding = preset, checkpoint, out, riding
        self.report = {"preset_name": preset_name, "preset": asdict(preset), "checkpoint": checkpoint,
                       "machine": reports.machine(), "optimizer": OPTIMIZER, "results": {}, "ratios": {},
                       "paired": {}, "direction": {}, "fused_against_eager": {}, "paper": PAPER, "complete": False}

    def save(self) -> None:
        report = self.report
        report["ratios"] = reports.ratios(report["results"])
        report["direction"] = direction.verdicts(report)
        report["fused_against_eager"] = direction.fused_verdicts(report)
        tmp = self.out / "bench.json.tmp"
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(self.out / "bench.json")

    @staticmethod
    def failed(what: str, error: Exception) -> str:
        from tqdm import tqdm

        tqdm.write(f"fastadapter bench: {what} failed: {type(error).__name__}: {error}")
        return f"{type(error).__name__}: {error}"

    def measure_mode(self, mode: str) -> None:
        results, paired = self.report["results"], self.report["paired"]
        if mode in NOT_BUILT:
            results[mode] = {"note": NOT_BUILT[mode]}
            return
        then_paired = self.riding.get(mode)
        try:
            results[mode] = steps.in_fresh_process(self.preset.device, steps.run_mode, mode, self.preset,
                                                   self.checkpoint, 0, then_paired)
            if then_paired:
                paired[f"{mode}/{then_paired}"] = results[mode].pop("paired")
        except Exception as error:  # one broken mode must not lose the others' measurements
            why = self.failed(f"mode {mode}", error)
            results[mode] = {"note": f"failed: {why}", "failed": True}
            if then_paired:
                paired[f"{mode}/{then_paired}"] = {"failed": f"in mode {mode}'s process: {why}"}

    def measure_pair(self, numerator: str, denominator: str) -> None:
        name = f"{numerator}/{denominator}"
        try:
            self.report["paired"][name] = steps.in_fresh_process(self.preset.device, steps.paired, self.preset,
                                                                 numerator, denominator, self.checkpoint, 0)
        except Exception as error:  # as for a mode: keep what the other runs measured
            self.report["paired"][name] = {"failed": self.failed(f"paired {name}", error)}


def run(preset_name: str = "cpu", modes: list[str] | None = None, checkpoint: str | None = None,
        out_dir: str = ".", pairs: list[tuple[str, str]] | None = None, **overrides) -> dict:
    """Measure each mode in a fresh process, then each pair (numerator, denominator) in one process with their
    steps alternating (steps.paired; default: (c)/(b) and (b)/(a) when both run). Writes bench.json (after every
    job) and bench.png to out_dir, prints the Markdown report and returns it."""
    from tqdm import tqdm

    preset = resolve_preset(preset_name, checkpoint, overrides)
    modes, pairs, riding, own_process = schedule(modes, pairs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    job = _Run(preset_name, preset, checkpoint, out, riding)
    jobs = [(MODES[mode], functools.partial(job.measure_mode, mode)) for mode in modes] + [
        (f"({num}) against ({den}), alternating", functools.partial(job.measure_pair, num, den))
        for num, den in own_process]
    progress = tqdm(jobs, desc="fastadapter bench", unit="run")
    for label, measure_one in progress:
        progress.set_postfix_str(label)
        measure_one()
        job.save()
    job.report["complete"] = True
    job.save()
    plotted = reports.plot(job.report, out / "bench.png")
    if not plotted:
        (out / "bench.png").unlink(missing_ok=True)  # an earlier run's chart must not pass for this one's
    print(reports.markdown(job.report))
    plot_note = f" and {out / 'bench.png'}" if plotted else " (no plot: no mode measured)"
    print(f"\nwrote {out / 'bench.json'}" + plot_note)
    return job.report
