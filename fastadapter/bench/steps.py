"""Running the bench's measurements: a mode trained and measured in this process (run_mode), two modes timed
against each other with their steps alternating (paired), each in a fresh process (in_fresh_process)."""

from __future__ import annotations

import functools
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from . import measure
from .direction import pair_statistics
from .models import setup_mode
from .modes import MODES, SAME_ADAPTERS, Preset, check_pair


def run_mode(mode: str, preset: Preset, checkpoint: str | None = None, seed: int = 0,
             then_paired: str | None = None) -> dict:
    """Train `mode` for warmup + steps steps in this process and measure it. then_paired: a mode to time against
    this one afterwards, their steps alternating (`paired`), reusing this mode's model: one process start and one
    model build fewer. Its memory figures are taken before."""
    from ..trainable import trainable_summary

    if then_paired is not None:
        check_pair(mode, then_paired)
    model, batch, optimizer = setup_mode(preset, mode, checkpoint, seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    cuda = preset.device == "cuda"
    saved = None
    if not preset.warmup:  # else the first warm-up step's forward counts them: one forward fewer
        saved, graph = measure.saved_bytes(lambda: model(**batch).loss, exclude=model.parameters())
        del graph
    rss_before = measure.rss_bytes()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses, phases = [], [], {phase: [] for phase in measure.STEP_PHASES}

    def train_step():
        return measure.timed_train_step(model, batch, optimizer, preset.device)

    for step in range(preset.warmup + preset.steps):
        if saved is None:  # the first warm-up step (untimed) runs under the saved-tensor hooks
            saved, timed = measure.saved_bytes(train_step, exclude=model.parameters())
        else:
            timed = train_step()
        if step >= preset.warmup:
            times.append(timed.seconds)
            losses.append(timed.loss.item())
            for phase, seconds in timed.phases.items():
                phases[phase].append(seconds)
    step_s = statistics.median(times)
    summary = trainable_summary(model)
    result = {
        "mode": mode, "label": MODES[mode], "trainable": sum(p.numel() for p in trainable), "step_s": step_s,
        "step_min_s": min(times), "step_max_s": max(times), "images_per_s": preset.batch / step_s,
        "step_times_s": times, "phases_s": _medians(phases), "losses": losses, "saved_bytes": saved,
        "adapters": summary.adapters,
    }
    if mode == "a":
        result["untied_trainable"] = summary.decoder_full_untied
    if cuda:
        result["peak_bytes"] = torch.cuda.max_memory_allocated()
        result["peak_kind"] = "peak allocated (GPU)"
    else:
        result["peak_bytes"] = measure.peak_rss_bytes()
        result["peak_kind"] = "peak RSS (process)"
        result["train_rss_growth_bytes"] = max(0, result["peak_bytes"] - rss_before)
    if then_paired is not None:
        result["paired"] = paired(preset, mode, then_paired, checkpoint, seed, (model, batch, optimizer))
    return result


def _timed_step(model, batch: dict, optimizer, device: str, before=None):
    """One training step's (wall seconds, process CPU seconds, seconds per phase); before() runs first,
    untimed."""
    if before is not None:
        before()
    cpu_start = time.process_time()
    timed = measure.timed_train_step(model, batch, optimizer, device)
    return timed.seconds, time.process_time() - cpu_start, timed.phases


def _medians(values: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(v) for name, v in values.items()}


def _use_backend(model, backend: str) -> None:
    import fastadapter

    for adapter in fastadapter.adapters(model).values():
        adapter.config = adapter.config.replace(backend=backend)


def paired(preset: Preset, numerator: str, denominator: str, checkpoint: str | None = None, seed: int = 0,
           numerator_setup: tuple | None = None) -> dict:
    """numerator against denominator in one process, their training steps alternating, so that machine drift
    hits both alike. Pairs of steps run denominator then numerator and the other way round by turns (neither
    always first). A pair in SAME_ADAPTERS (fused against eager adapters) runs on one model whose adapters switch
    implementation every step; any other pair on one model per mode, built alike (same seed, same batch).
    Returns each mode's median step seconds and phase seconds, their ratio and the spread of the per-pair
    ratios (pair_statistics) by the wall clock and, on CPU, by the process's CPU time too, which a shared
    machine's stolen time does not inflate.
    numerator_setup: (model, batch, optimizer) already prepared for the numerator (setup_mode), to reuse; a fused/eager
    pair on it needs no warm-up, since the model has just been measured."""
    warmup = 0 if numerator_setup is not None and (numerator, denominator) in SAME_ADAPTERS else preset.warmup
    numerator_setup = numerator_setup or setup_mode(preset, numerator, checkpoint, seed)
    if (numerator, denominator) in SAME_ADAPTERS:
        model = numerator_setup[0]
        backends = {denominator: "eager", numerator: "auto"}
        steps = {mode: functools.partial(_timed_step, *numerator_setup, preset.device,
                                         functools.partial(_use_backend, model, backends[mode]))
                 for mode in (denominator, numerator)}
        how = "the same adapters switching implementation at every step"
    else:
        steps = {numerator: functools.partial(_timed_step, *numerator_setup, preset.device),
                 denominator: functools.partial(_timed_step, *setup_mode(preset, denominator, checkpoint, seed),
                                                preset.device)}
        how = "each mode its own model, steps alternating"
    wall, cpu = {mode: [] for mode in steps}, {mode: [] for mode in steps}
    phases = {mode: {} for mode in steps}
    order = (denominator, numerator)
    for pair in range(warmup + preset.pairs_per_run):
        for mode in order if pair % 2 == 0 else order[::-1]:
            seconds, cpu_seconds, by_phase = steps[mode]()
            if pair >= warmup:
                wall[mode].append(seconds)
                cpu[mode].append(cpu_seconds)
                for phase, value in by_phase.items():
                    phases[mode].setdefault(phase, []).append(value)
    medians = _medians(wall)
    out = {"numerator": numerator, "denominator": denominator, "how": how, "step_s": medians,
           "ratio": medians[numerator] / medians[denominator], "steps_each": len(wall[numerator]),
           "phases_s": {mode: _medians(by_phase) for mode, by_phase in phases.items()},
           "pairs_wall_time": pair_statistics(wall[denominator], wall[numerator])}
    if preset.device == "cpu":
        out["pairs_process_cpu_time"] = pair_statistics(cpu[denominator], cpu[numerator])
    return out


# Imported once by the fork server that starts every CPU measurement's process: torch and transformers take ~7 s
# to import on 2 CPU cores, each time.
_PRELOAD = ["torch", "transformers.models.blip.modeling_blip", "transformers.models.blip.modeling_blip_text"]


def in_fresh_process(device: str, fn, *args):
    """fn(*args) in a new process, so that its peak memory is its own: for CPU runs forked from a server that has
    already imported torch and transformers; for CUDA runs spawned, so that nothing a library did on import can
    have initialised CUDA before the fork."""
    if device == "cpu":
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
    else:
        context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()
