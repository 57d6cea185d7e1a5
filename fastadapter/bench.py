"""`fastadapter bench`: the paper's training-cost comparison (§4.2), re-measured on this machine.

Each mode trains BlipForConditionalGeneration (BLIP-base shapes from BlipConfig with random weights, or a
checkpoint the user gives; speed and memory do not depend on the weights) on Pillow-made image-caption
batches, each mode in a fresh process so that peak memory is its own:

  a       full fine-tuning of the text decoder, vision encoder frozen (the paper's basic fine-tune)
  b       eager adapters (plain PyTorch) in every tower, as the paper places them
  b-text  eager adapters in the text decoder only (skips the vision backward, as (a) does)
  c       fused adapters in every tower
  c-text  fused adapters in the text decoder only
  d       fused adapters with the fused ITC/ITM/LM losses (reported as not measured until they exist)
  e       torch.compile of (b): each eager adapter compiled (the base model stays eager)

Ratios of step times between separate processes move with the machine's drift; `--pairs X/Y,...` also times
each given ratio in one process, the two modes' steps alternating (see `paired`). By default (c)/(b) and
(b)/(a) are paired when their modes run, each in its numerator's process after that mode's own measurement:
(c)/(b) with the same adapters switching implementation every step, (b)/(a) with a model for (a) built beside
(b)'s. Every timed step is also split into forward, backward and optimizer
(measure.timed_train_step); the report ends with verdicts judged from all this (fastadapter/direction.py): fused
against eager adapters, and the paper's direction.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import multiprocessing
import platform
import random
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from . import direction

PAPER = {
    "trainable_full": 161_323_580, "trainable_adapters": 20_033_280,
    "memory_full": "35 GB (Colab TPU host RAM)", "memory_adapters": "15 GB (V100)",
    "time_full": "> 7 min for 50 epochs of 800 images", "time_adapters": "42 s for 50 epochs of 800 images",
    "adapters": 48,  # §3.3.2: 12 in the image encoder, 36 in the text encoder and decoder; r is not given
}
MODES = {
    "a": "full fine-tune of the text decoder",
    "b": "eager adapters, every tower",
    "b-text": "eager adapters, text decoder",
    "c": "fused adapters, every tower",
    "c-text": "fused adapters, text decoder",
    "d": "fused adapters + fused losses",
    "e": "torch.compile of (b)",
}
NOT_BUILT = {"d": "not measured: the fused ITC/ITM/LM losses are not built yet"}
# Pairs (numerator, denominator) whose modes differ only in the adapters' implementation: `paired` times them
# on one model whose adapters switch implementation.
SAME_ADAPTERS = {("c", "b"), ("c-text", "b-text")}
# Paired by default when both modes run: fused against eager adapters in every tower (fastadapter's own target),
# and the paper's placement against (a), the verdict separate processes least settle on CPU (0.87-1.38 there,
# 1.17-1.21 paired). More would break the CPU default's 3 minutes on a slow day (170 s with c-text/b-text too).
DEFAULT_PAIRS = (("c", "b"), ("b", "a"))


@dataclass(frozen=True)
class Preset:
    device: str
    dtype: str
    batch: int
    image_size: int
    steps: int
    warmup: int
    bottleneck: int = 256
    pair_steps: int | None = None  # pairs of steps in a paired run (None: as many as steps)

    @property
    def pairs_per_run(self) -> int:
        return self.pair_steps or self.steps


PRESETS = {
    # Small enough to finish in under 3 minutes on 2 CPU cores: batch 2 at 224 px, 4 timed steps; a paired run
    # takes 6 pairs, the fewest a sign test can decide from (all six one way: p = 0.031; 4 decide nothing).
    "cpu": Preset("cpu", "float32", batch=2, image_size=224, steps=4, warmup=1, pair_steps=6),
    "gpu": Preset("cuda", "bfloat16", batch=32, image_size=384, steps=10, warmup=3),
}


# Modules whose torch default init BLIP's post_init (_init_weights) overwrites. What the skipped init leaves is
# filled with this value: None (nothing, the fast path) or, in tests, NaN to prove post_init covers it all.
_REINITIALISED = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding)
_SKIPPED_INIT_FILL: float | None = None


@contextlib.contextmanager
def _without_torch_default_init():
    """Constructing BLIP inits every Linear, Conv2d and Embedding twice: torch's default, then transformers'
    post_init. The first is work thrown away (2.6 of 4.7 s per BLIP-base model on 2 cores)."""
    def skipped(module):
        if _SKIPPED_INIT_FILL is not None:
            for p in module.parameters(recurse=False):
                p.data.fill_(_SKIPPED_INIT_FILL)

    originals = {cls: cls.reset_parameters for cls in _REINITIALISED}
    try:
        for cls in _REINITIALISED:
            cls.reset_parameters = skipped
        yield
    finally:
        for cls, original in originals.items():
            cls.reset_parameters = original


# transformers' post_init draws every weight with Tensor.normal_, on CPU one serial generator (~80 M values/s:
# 3.0 of 3.3 s per BLIP-base build on 2 cores, and a default bench builds 7 models). Speed and memory do not
# depend on the values, so while the bench builds a model, normal_ copies standard-normal values from one pool
# drawn once (from the seeded default generator), at a random offset per slice, scaled to the mean and std
# post_init asks for: every tensor has the distribution post_init gives it; tensors share values.
_NORMAL_POOL_SIZE = 1 << 22  # 4 M values, 16 MiB


@contextlib.contextmanager
def _pooled_normal_init():
    pool = torch.randn(_NORMAL_POOL_SIZE)
    original = torch.Tensor.normal_

    def pooled_normal_(tensor, mean=0.0, std=1.0, *, generator=None):
        if generator is not None or not tensor.is_contiguous() or tensor.device.type != "cpu":
            return original(tensor, mean, std, generator=generator)
        flat, start = tensor.view(-1), 0
        while start < flat.numel():
            offset = int(torch.randint(_NORMAL_POOL_SIZE, ()))
            length = min(flat.numel() - start, _NORMAL_POOL_SIZE - offset)
            flat[start:start + length].copy_(pool[offset:offset + length])
            start += length
        return tensor.mul_(std).add_(mean)

    torch.Tensor.normal_ = pooled_normal_
    try:
        yield
    finally:
        torch.Tensor.normal_ = original


def _require_checkpoint(checkpoint: str) -> None:
    if not Path(checkpoint).exists():
        raise FileNotFoundError(f"fastadapter bench: no checkpoint at {checkpoint} (a local directory is "
                                "expected; nothing is downloaded)")


def preset_for_checkpoint(preset: Preset, checkpoint: str, requested: int | None) -> Preset:
    """The preset at the image size the checkpoint's vision encoder takes (its position embeddings fix it);
    a different size asked for explicitly is refused, and so is a checkpoint of another BLIP head, whose
    missing captioning decoder from_pretrained would silently fill with random weights."""
    from transformers import BlipConfig

    _require_checkpoint(checkpoint)
    config = BlipConfig.from_pretrained(checkpoint)
    architectures = config.architectures or []
    if architectures and "BlipForConditionalGeneration" not in architectures:
        raise ValueError(f"fastadapter bench: the checkpoint at {checkpoint} is a {', '.join(architectures)}; the "
                         "bench trains captioning, which needs a BlipForConditionalGeneration checkpoint")
    size = config.vision_config.image_size
    if requested is not None and requested != size:
        raise ValueError(f"fastadapter bench: the checkpoint at {checkpoint} takes {size}-px images; "
                         f"--image-size {requested} does not fit its position embeddings")
    return replace(preset, image_size=size)


def build_model(checkpoint: str | None, preset: Preset):
    from transformers import BlipConfig, BlipForConditionalGeneration

    if checkpoint:
        _require_checkpoint(checkpoint)
        model = BlipForConditionalGeneration.from_pretrained(checkpoint)
    else:
        config = BlipConfig()
        config.vision_config.image_size = preset.image_size
        with _without_torch_default_init(), _pooled_normal_init():
            model = BlipForConditionalGeneration(config)
    return model.to(device=preset.device, dtype=getattr(torch, preset.dtype))


def prepare(model, mode: str, preset: Preset) -> None:
    """Make `model` train what `mode` trains."""
    import fastadapter

    config = fastadapter.AdapterConfig(bottleneck=preset.bottleneck, init="normal")
    text_only = ("text_decoder",)
    if mode == "a":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.text_decoder.parameters():
            p.requires_grad_(True)
    elif mode in ("b", "b-text", "e"):
        fastadapter.patch(model, config, backend="reference",
                          **({"towers": text_only} if mode == "b-text" else {}))
        if mode == "e":
            for adapter in fastadapter.adapters(model).values():
                adapter.forward = torch.compile(adapter.forward)
    elif mode in ("c", "c-text"):
        fastadapter.patch(model, config, **({"towers": text_only} if mode == "c-text" else {}))
    else:
        raise ValueError(f"unknown mode {mode!r}")


def _setup(preset: Preset, checkpoint: str | None, seed: int):
    """A model in train mode and one batch, on the preset's device and dtype."""
    from .data import caption_batch

    if preset.device == "cpu":
        torch.set_flush_denormal(True)  # random weights make denormals; they are not what we measure
    torch.manual_seed(seed)
    model = build_model(checkpoint, preset)
    model.train()
    batch = caption_batch(preset.batch, preset.image_size, model.config.text_config.bos_token_id, seed)
    batch = {k: v.to(preset.device) for k, v in batch.items()}
    batch["pixel_values"] = batch["pixel_values"].to(getattr(torch, preset.dtype))
    return model, batch


OPTIMIZER = "fused AdamW (lr 1e-5)"


def make_optimizer(model) -> torch.optim.Optimizer:
    """AdamW over the model's trainable parameters, fused (one vectorised op updates them all) on CPU and GPU:
    every mode gets the fastest AdamW torch has. PyTorch's default on CPU, a loop over the parameters, took
    668 ms per step for (a)'s 138 M parameters against 133 ms fused (2 cores, benchmarks/results/cpu-2026-11-29/
    step-phases.md): it would weigh the optimizer's implementation, not the training, against full fine-tuning.
    OPTIMIZER names it in the report."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)


def setup_mode(preset: Preset, mode: str, checkpoint: str | None = None, seed: int = 0):
    """(model, batch, optimizer) for `mode`, built as every measurement builds them: same seed, same batch."""
    model, batch = _setup(preset, checkpoint, seed)
    prepare(model, mode, preset)
    return model, batch, make_optimizer(model)


def run_mode(mode: str, preset: Preset, checkpoint: str | None = None, seed: int = 0,
             then_paired: str | None = None) -> dict:
    """Train `mode` for warmup + steps steps in this process and measure it. then_paired: a mode to time against
    this one afterwards, their steps alternating (`paired`), reusing this mode's model: one process start and one
    model build fewer, about 12 s of a CPU run. Its memory figures are taken before."""
    from .measure import PHASES, peak_rss_bytes, rss_bytes, saved_bytes, timed_train_step
    from .summary import trainable_summary

    if then_paired is not None:
        _check_pair(mode, then_paired)
    model, batch, optimizer = setup_mode(preset, mode, checkpoint, seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    cuda = preset.device == "cuda"
    saved = None
    if not preset.warmup:  # else the first warm-up step's forward counts them: one forward fewer
        saved, graph = saved_bytes(lambda: model(**batch).loss, exclude=model.parameters())
        del graph
    rss_before = rss_bytes()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, losses, phases = [], [], {phase: [] for phase in PHASES}

    def train_step():
        return timed_train_step(model, batch, optimizer, preset.device)

    for step in range(preset.warmup + preset.steps):
        if saved is None:  # the first warm-up step (untimed) runs under the saved-tensor hooks
            saved, timed = saved_bytes(train_step, exclude=model.parameters())
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
        result["peak_bytes"] = peak_rss_bytes()
        result["peak_kind"] = "peak RSS (process)"
        result["train_rss_growth_bytes"] = max(0, result["peak_bytes"] - rss_before)
    if then_paired is not None:
        result["paired"] = paired(preset, mode, then_paired, checkpoint, seed, (model, batch, optimizer))
    return result


def pair_statistics(den: list[float], num: list[float]) -> dict:
    """How the per-pair ratios num/den spread: quartiles, a 95% bootstrap interval of their median (2000
    resamples, seeded) and in how many pairs the numerator's step was faster."""
    ratios = [n / d for d, n in zip(den, num)]
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    return {"quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3,
            "median_ci95": [medians[49], medians[1950]], "numerator_faster": sum(r < 1 for r in ratios),
            "pairs": len(ratios)}


def _check_pair(numerator: str, denominator: str) -> None:
    measurable = [m for m in MODES if m not in NOT_BUILT]
    if numerator == denominator or numerator not in measurable or denominator not in measurable:
        raise ValueError(f"fastadapter bench: pair {numerator}/{denominator} is not two different measurable "
                         f"modes; modes: {measurable}")


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """'b/a,c/b' -> [("b", "a"), ("c", "b")]: numerator and denominator modes, both measurable."""
    pairs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        modes = tuple(m.strip() for m in item.split("/"))
        if len(modes) != 2:
            raise ValueError(f"fastadapter bench: pair {item!r} is not of the form X/Y (e.g. b/a)")
        _check_pair(*modes)
        pairs.append(modes)
    return pairs


def _timed_step(model, batch: dict, optimizer, device: str, before=None):
    """One training step's (wall seconds, process CPU seconds, seconds per phase); before() runs first,
    untimed."""
    from .measure import timed_train_step

    if before is not None:
        before()
    cpu_start = time.process_time()
    timed = timed_train_step(model, batch, optimizer, device)
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
        backends = {denominator: "reference", numerator: "auto"}
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


def _in_fresh_process(device: str, fn, *args):
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


def failures(report: dict) -> list[str]:
    """The modes and the paired runs that raised instead of measuring."""
    failed = [mode for mode, r in report["results"].items() if r.get("failed")]
    return failed + [f"paired {name}" for name, r in report["paired"].items() if "failed" in r]


def ratios(results: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for name, (num, den) in {"c/b": ("c", "b"), "b/a": ("b", "a"), "b-text/a": ("b-text", "a"),
                             "c-text/a": ("c-text", "a"), "c/a": ("c", "a"), "e/b": ("e", "b")}.items():
        if num in results and den in results and "step_s" in results[num] and "step_s" in results[den]:
            out[name] = {"time": results[num]["step_s"] / results[den]["step_s"],
                         "saved": results[num]["saved_bytes"] / results[den]["saved_bytes"],
                         "memory": results[num]["peak_bytes"] / results[den]["peak_bytes"]}
    return out


def machine() -> dict:
    info = {"date": datetime.date.today().isoformat(), "python": platform.python_version(),
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
    lines = [f"fastadapter bench — {report['machine']['date']}, {report['machine'].get('gpu', report['machine']['cpu'])}"
             f", torch {report['machine']['torch']}; {model}; preset {report['preset_name']}: {preset['dtype']}, batch "
             f"{preset['batch']} at {preset['image_size']} px, median of {preset['steps']} steps after "
             f"{preset['warmup']} warm-up, {report.get('optimizer', 'AdamW')}"
             + (", CPU denormals flushed" if preset["device"] == "cpu" else ""),
             "", "| mode | trains | trainable params | step (s), median [min–max] | images/s | saved for backward | peak memory | "
             "50 epochs × 800 images (projected) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for mode, r in report["results"].items():
        if "step_s" not in r:
            lines.append(f"| {mode} | {MODES[mode]} | | | | | | {r['note']} |")
            continue
        projected = 50 * 800 / r["images_per_s"]
        lines.append(f"| {mode} | {r['label']} | {r['trainable']:,} | {r['step_s']:.3f} [{r['step_min_s']:.3f}–{r['step_max_s']:.3f}] | "
                     f"{r['images_per_s']:.2f} | "
                     f"{r['saved_bytes'] / 2**20:.0f} MiB | {r['peak_bytes'] / 2**30:.2f} GiB | {projected / 60:.1f} min |")
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


def run(preset_name: str = "cpu", modes: list[str] | None = None, checkpoint: str | None = None,
        out_dir: str = ".", pairs: list[tuple[str, str]] | None = None, **overrides) -> dict:
    """Measure each mode in a fresh process, then each pair (numerator, denominator) in one process with their
    steps alternating (`paired`; default: (c)/(b) when both run). Writes bench.json (after every job) and
    bench.png to out_dir, prints the Markdown report and returns it."""
    from tqdm import tqdm

    chosen = {k: v for k, v in overrides.items() if v is not None}
    if "steps" in chosen:
        chosen.setdefault("pair_steps", None)  # steps asked for: pairs take as many
    preset = Preset(**{**asdict(PRESETS[preset_name]), **chosen})
    if checkpoint:
        preset = preset_for_checkpoint(preset, checkpoint, overrides.get("image_size"))
    if preset.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("fastadapter bench: preset 'gpu' needs a CUDA device, and none is visible")
    modes = modes or list(MODES)
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"fastadapter bench: unknown mode(s) {unknown}; expected some of {list(MODES)}")
    if pairs is None:
        pairs = [pair for pair in DEFAULT_PAIRS if set(pair) <= set(modes)]
    pairs = list(dict.fromkeys(pairs))
    for num, den in pairs:
        _check_pair(num, den)
    # A pair rides in its numerator's process when that mode runs (one process and one model fewer; one pair per
    # mode); the others get their own.
    riding = {}
    for num, den in pairs:
        if num in modes:
            riding.setdefault(num, den)
    own_process = [(num, den) for num, den in pairs if riding.get(num) != den]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"preset_name": preset_name, "preset": asdict(preset), "checkpoint": checkpoint, "machine": machine(),
              "optimizer": OPTIMIZER, "results": {}, "ratios": {}, "paired": {}, "direction": {},
              "fused_against_eager": {}, "paper": PAPER, "complete": False}
    results = report["results"]

    def save():  # after every job, so that an interrupted run keeps what it measured
        report["ratios"] = ratios(results)
        report["direction"] = direction.verdicts(report)
        report["fused_against_eager"] = direction.fused_verdicts(report)
        tmp = out / "bench.json.tmp"
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(out / "bench.json")

    def failed(what: str, error: Exception) -> str:
        tqdm.write(f"fastadapter bench: {what} failed: {type(error).__name__}: {error}")
        return f"{type(error).__name__}: {error}"

    def measure_mode(mode: str) -> None:
        if mode in NOT_BUILT:
            results[mode] = {"note": NOT_BUILT[mode]}
            return
        then_paired = riding.get(mode)
        try:
            results[mode] = _in_fresh_process(preset.device, run_mode, mode, preset, checkpoint, 0,
                                              then_paired)
            if then_paired:
                report["paired"][f"{mode}/{then_paired}"] = results[mode].pop("paired")
        except Exception as error:  # one broken mode must not lose the others' measurements
            why = failed(f"mode {mode}", error)
            results[mode] = {"note": f"failed: {why}", "failed": True}
            if then_paired:
                report["paired"][f"{mode}/{then_paired}"] = {"failed": f"in mode {mode}'s process: {why}"}

    def measure_pair(numerator: str, denominator: str) -> None:
        name = f"{numerator}/{denominator}"
        try:
            report["paired"][name] = _in_fresh_process(preset.device, paired, preset, numerator, denominator,
                                                       checkpoint, 0)
        except Exception as error:  # as for a mode: keep what the other runs measured
            report["paired"][name] = {"failed": failed(f"paired {name}", error)}

    jobs = [(MODES[mode], functools.partial(measure_mode, mode)) for mode in modes] + [
        (f"({num}) against ({den}), alternating", functools.partial(measure_pair, num, den)) for num, den in own_process]
    progress = tqdm(jobs, desc="fastadapter bench", unit="run")
    for label, job in progress:
        progress.set_postfix_str(label)
        job()
        save()
    report["complete"] = True
    save()
    plotted = plot(report, out / "bench.png")
    if not plotted:
        (out / "bench.png").unlink(missing_ok=True)  # an earlier run's chart must not pass for this one's
    print(markdown(report))
    print(f"\nwrote {out / 'bench.json'}" + (f" and {out / 'bench.png'}" if plotted else " (no plot: no mode measured)"))
    return report
