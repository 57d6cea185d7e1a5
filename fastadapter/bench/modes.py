"""The bench's modes and presets: what `fastadapter bench` compares (the paper's §4.2, re-measured here).

Each mode trains BlipForConditionalGeneration (BLIP-base shapes from BlipConfig with random weights, or a
checkpoint the user gives; speed and memory do not depend on the weights) on Pillow-made image-caption
batches, each mode in a fresh process so that peak memory is its own:

  a       full fine-tuning of the text decoder, vision encoder frozen (the paper's basic fine-tune)
  b       eager adapters (plain PyTorch) in every tower, as the paper places them
  b-text  eager adapters in the text decoder only (skips the vision backward, as (a) does)
  c       fused adapters in every tower
  c-text  fused adapters in the text decoder only
  d       (c) with the fused LM loss (fastadapter.lm_loss: no (B, L, V) logits); (b) and (c) keep Hugging Face's
  e       torch.compile of (b): each eager adapter compiled (the base model stays eager)
  c-lean  (c) with the lean backbone (patch(..., backbone="lean"): frozen blocks save no attention
          probabilities, q/k/v or MLP activations and recompute them in backward); opt-in with --modes
  b-lean  (b) with the lean backbone (eager adapters); opt-in with --modes

Ratios of step times between separate processes move with the machine's drift; `--pairs X/Y,...` also times
each given ratio in one process, the two modes' steps alternating (see `paired`). By default (c)/(b) and
(b)/(a) are paired when their modes run, each in its numerator's process after that mode's own measurement:
(c)/(b) with the same adapters switching implementation every step, (b)/(a) with a model for (a) built beside
(b)'s. Every timed step is also split into forward, backward and optimizer
(measure.timed_train_step); the report ends with verdicts judged from all this (direction.py): fused
against eager adapters, and the paper's direction.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "d": "fused adapters + fused LM loss",
    "e": "torch.compile of (b)",
    "c-lean": "fused adapters, lean backbone",
    "b-lean": "eager adapters, lean backbone",
}
# What runs without --modes: the lean-backbone modes are opt-in, so that the CPU default stays within 3 minutes.
DEFAULT_MODES = ("a", "b", "b-text", "c", "c-text", "d", "e")
NOT_BUILT: dict[str, str] = {}  # modes listed but not measurable yet, with why
# Pairs (numerator, denominator) whose modes differ only in the adapters' implementation: `paired` times them
# on one model whose adapters switch implementation.
SAME_ADAPTERS = {("c", "b"), ("c-text", "b-text")}
# Paired by default when both modes run: fused against eager adapters in every tower (fastadapter's own target),
# and the paper's placement against (a), the verdict separate processes least settle on CPU. More pairs would
# break the CPU default's 3 minutes on a slow day (benchmarks/results/notes/).
DEFAULT_PAIRS = (("c", "b"), ("b", "a"), ("c-lean", "b"))


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


def check_pair(numerator: str, denominator: str) -> None:
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
        check_pair(*modes)
        pairs.append(modes)
    return pairs
