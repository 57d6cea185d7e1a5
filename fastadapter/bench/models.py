"""The bench's models: BLIP-base built fast, prepared for a mode, with its batch and optimizer.

The fast build swaps torch's default init and Tensor.normal_ only inside a context manager while the bench builds
a model: the library itself never changes torch's global state.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

import torch

from .modes import Preset

# Modules whose torch default init BLIP's post_init (_init_weights) overwrites. What the skipped init leaves is
# filled with this value: None (nothing, the fast path) or, in tests, NaN to prove post_init covers it all.
_REINITIALISED = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding)
_SKIPPED_INIT_FILL: float | None = None


@contextlib.contextmanager
def _without_torch_default_init():
    """Constructing BLIP inits every Linear, Conv2d and Embedding twice: torch's default, then transformers'
    post_init. The first is work thrown away, over half of a CPU build (benchmarks/results/notes/)."""
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


# transformers' post_init draws every weight with Tensor.normal_, on CPU one serial generator: most of what is
# left of a build, and a default bench builds 7 models (benchmarks/results/notes/). Speed and memory do not
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

    # Hugging Face's loss in every mode but (d), so that (b), (c) and (e) compare adapters alone.
    config = fastadapter.AdapterConfig(bottleneck=preset.bottleneck, init="normal", fused_losses=False)
    text_only = ("text_decoder",)
    if mode == "a":
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.text_decoder.parameters():
            p.requires_grad_(True)
    elif mode in ("b", "b-text", "e", "b-lean"):
        if mode == "b-lean":
            config = config.replace(backbone="lean")
        fastadapter.patch(model, config, backend="eager",
                          **({"towers": text_only} if mode == "b-text" else {}))
        if mode == "e":
            for adapter in fastadapter.adapters(model).values():
                adapter.forward = torch.compile(adapter.forward)
    elif mode == "c-lean":
        fastadapter.patch(model, config, backbone="lean")
    elif mode in ("c", "c-text"):
        fastadapter.patch(model, config, **({"towers": text_only} if mode == "c-text" else {}))
    elif mode == "d":
        fastadapter.patch(model, config, fused_losses=True)
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
    every mode gets the fastest AdamW torch has. PyTorch's default on CPU, a loop over the parameters, is several
    times slower for (a)'s 138 M parameters (benchmarks/results/notes/cpu-2026-11-29/step-phases.md): it would
    weigh the optimizer's implementation, not the training, against full fine-tuning.
    OPTIMIZER names it in the report."""
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)


def setup_mode(preset: Preset, mode: str, checkpoint: str | None = None, seed: int = 0):
    """(model, batch, optimizer) for `mode`, built as every measurement builds them: same seed, same batch."""
    model, batch = _setup(preset, checkpoint, seed)
    prepare(model, mode, preset)
    return model, batch, make_optimizer(model)
