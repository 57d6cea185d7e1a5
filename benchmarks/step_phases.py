"""Where a training step's time goes, per `fastadapter bench` mode: forward, backward and the optimizer step.

    python benchmarks/step_phases.py [--preset cpu|gpu] [--modes a,b,b-text] [--steps N] [--batch B]
                                     [--image-size P] [--default-adamw]

Each mode gets its own model, built and prepared as `fastadapter bench` builds it (same seed, batch and
preset), all in this one process; their steps take turns, so the machine's drift hits every mode alike.
Medians per phase, timed as the bench times them (measure.timed_train_step: the host clock on CPU, CUDA
events between the phases on GPU). It says why a ratio such as (b)/(a) is what it is: (a) computes weight
grads for, and runs AdamW over, 138 M decoder parameters; adapters in every tower train 9 M but need a
backward pass through the vision encoder, which (a) skips. The optimizer is the
bench's (fused AdamW); --default-adamw takes PyTorch's default AdamW instead, to show what that choice weighs.
"""

import argparse
import statistics
from dataclasses import replace

import torch

from fastadapter import bench
from fastadapter.bench.measure import STEP_PHASES, timed_train_step


def step_phases(preset: bench.Preset, modes: list[str], default_adamw: bool = False) -> dict[str, dict[str, float]]:
    """Median seconds of each phase (and of the whole step, 'step') per mode, modes taking turns step by step."""
    runs = {}
    for mode in modes:
        model, batch, optimizer = bench.setup_mode(preset, mode)
        if default_adamw:
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        runs[mode] = (model, batch, optimizer)
    times = {mode: {phase: [] for phase in (*STEP_PHASES, "step")} for mode in modes}
    for step in range(preset.warmup + preset.steps):
        for mode in modes if step % 2 == 0 else modes[::-1]:
            timed = timed_train_step(*runs[mode], preset.device)
            if step >= preset.warmup:
                for phase, value in (*timed.phases.items(), ("step", timed.seconds)):
                    times[mode][phase].append(value)
    return {mode: {phase: statistics.median(values) for phase, values in by_phase.items()}
            for mode, by_phase in times.items()}


def table(medians: dict[str, dict[str, float]]) -> str:
    lines = ["| mode | trains | " + " | ".join(f"{p} (ms)" for p in (*STEP_PHASES, "step")) + " |",
             "|---|---|" + "---:|" * (len(STEP_PHASES) + 1)]
    for mode, by_phase in medians.items():
        lines.append(f"| {mode} | {bench.MODES[mode]} | "
                     + " | ".join(f"{by_phase[p] * 1e3:.0f}" for p in (*STEP_PHASES, "step")) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(bench.PRESETS))
    parser.add_argument("--modes", default="a,b,b-text", help="comma-separated bench modes (default a,b,b-text)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per mode (default 10)")
    parser.add_argument("--batch", type=int, help="override the preset's batch size")
    parser.add_argument("--image-size", type=int, help="override the preset's image size")
    parser.add_argument("--default-adamw", action="store_true",
                        help="PyTorch's default AdamW instead of the bench's fused one")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",")]
    unknown = [m for m in modes if m not in bench.MODES or m in bench.NOT_BUILT]
    if unknown:
        parser.error(f"unknown or unbuilt mode(s) {unknown}")
    preset = bench.PRESETS[args.preset]
    preset = replace(preset, steps=args.steps, batch=args.batch or preset.batch,
                     image_size=args.image_size or preset.image_size)
    if preset.device == "cuda" and not torch.cuda.is_available():
        parser.error("preset gpu needs a CUDA device")
    print(f"preset {args.preset}: {preset.dtype}, batch {preset.batch} at {preset.image_size} px; medians of "
          f"{preset.steps} steps per mode after {preset.warmup} warm-up, modes taking turns in one process; "
          f"{'PyTorch default' if args.default_adamw else 'fused'} AdamW\n")
    print(table(step_phases(preset, modes, args.default_adamw)))


if __name__ == "__main__":
    main()
