"""`fastadapter demo`, a short look: BLIP-base shapes, adapters trained for a few steps on Pillow-made images,
eager adapters (plain PyTorch) against fused ones on one model — the same losses, and a glance at the step time.
`fastadapter bench` is the measurement (paired timing, memory, the paper's comparison)."""

from __future__ import annotations

import statistics

import torch

from ..config import AdapterConfig
from ..patching import adapters, patch, unpatch
from ..trainable import trainable_summary
from .data import caption_batch
from .measure import timed_train_step


def blip_base():
    from transformers import BlipConfig, BlipForConditionalGeneration

    return BlipForConditionalGeneration(BlipConfig())  # BLIP-base shapes, random weights


def train_steps(model, batch, steps: int, lr: float = 1e-4) -> tuple[list[float], list[float]]:
    """(losses, step seconds) for `steps` AdamW steps on one batch, after one warm-up step."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses, times = [], []
    for step in range(steps + 1):
        timed = timed_train_step(model, batch, optimizer)
        if step:  # step 0 warms up allocators and kernels
            times.append(timed.seconds)
            losses.append(timed.loss.item())
    return losses, times


def run(steps: int = 3, batch_size: int = 2, image_size: int = 384, bottleneck: int = 256, seed: int = 0) -> list:
    # A randomly initialised BLIP-base sends denormal-sized gradients through the frozen vision tower;
    # on CPU they cost ~10x per step. We flush them, deliberately: it is not what we mean to measure.
    torch.set_flush_denormal(True)
    torch.manual_seed(seed)
    print(f"fastadapter demo: BLIP-base shapes (random weights), batch {batch_size} at {image_size} px, "
          f"{steps} timed steps per mode after 1 warm-up, {torch.get_num_threads()} CPU threads, denormals flushed")
    model = blip_base()
    model.train()
    batch = caption_batch(batch_size, image_size, model.config.text_config.bos_token_id, seed)
    results = []
    for label, backend in (("eager adapters (plain PyTorch)", "eager"), ("fused adapters", "auto")):
        patch(model, AdapterConfig(bottleneck=bottleneck, init="normal", backend=backend))
        torch.manual_seed(seed)
        for module in adapters(model).values():  # identical initial adapters in both modes
            module.reset_parameters()
        losses, times = train_steps(model, batch, steps)
        summary = trainable_summary(model)
        results.append({"mode": label, "trainable": summary.trainable, "losses": losses,
                        "step_s": statistics.median(times)})
        print(f"  {label}: loss {' -> '.join(f'{x:.4f}' for x in losses)}, median step {results[-1]['step_s']:.2f} s")
        unpatch(model)
    print()
    print("| mode | trainable parameters | first loss | last loss | median step (s) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['mode']} | {r['trainable']:,} | {r['losses'][0]:.4f} | {r['losses'][-1]:.4f} | "
              f"{r['step_s']:.2f} |")
    eager, fused = results
    print(f"\nfused / eager step time: {fused['step_s'] / eager['step_s']:.2f} (medians of {steps} steps, one mode "
          "after the other: a glance, not a measurement; `fastadapter bench --modes c --pairs c/b` times it paired)")
    print()
    print(trainable_summary(patch(model, AdapterConfig(bottleneck=bottleneck))))
    return results
