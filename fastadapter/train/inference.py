"""A trained run's model back from its checkpoint, and captions from it.

A checkpoint names its base (a checkpoint path, or `tiny`/`base` with the seed) and the base weights' fingerprint,
so `--adapters DIR` alone rebuilds the same model; a `--model` that names another base, or a base whose weights
differ (random initialisation changes across transformers versions), is a clear error.
"""

from __future__ import annotations

from pathlib import Path

import torch

from . import checkpoint, models

# BLIP's captioning settings (its generate): beam search of 3, 20 tokens at most, 5 at least.
BEAMS, MAX_LENGTH, MIN_LENGTH = 3, 20, 5


def resolve(adapters) -> Path:
    """A checkpoint folder (epoch-N), or a run folder (its newest checkpoint)."""
    path = Path(adapters)
    if (path / checkpoint.STATE_JSON).is_file():
        return path
    newest = checkpoint.latest(path)
    if newest is None:
        raise FileNotFoundError(f"--adapters {adapters}: neither a checkpoint (state.json) nor a run folder with "
                                "checkpoints/")
    return newest


def load(adapters, model: str | None = None):
    """(model in eval mode with its adapters, tokenizer, the checkpoint's state.json)."""
    path = resolve(adapters)
    info = checkpoint.read_info(path)
    base = info["base"]
    wanted = base["model"]
    if model is not None and (Path(model).resolve().as_posix() if models.is_checkpoint(model) else model) != wanted:
        raise ValueError(f"--model {model!r} is not the base {path} was trained on ({wanted!r})")
    tokenizer = models.load_tokenizer(path / "tokenizer")
    built, description = models.build_model(wanted, info["task"], tokenizer, base.get("seed", 0))
    if description["fingerprint"] != base["fingerprint"]:
        raise ValueError(f"the base rebuilt from {wanted!r} does not have the weights {path} was trained on "
                         "(another transformers version initialises random weights differently, or the checkpoint "
                         "folder changed)")
    checkpoint.load_trained(built, path)
    return built.eval(), tokenizer, info


@torch.no_grad()
def captions(model, tokenizer, pixel_values, prompt: str = "", beams: int = BEAMS, max_length: int = MAX_LENGTH,
             min_length: int = MIN_LENGTH) -> list[str]:
    """Generated captions (greedy with beams=1), the prompt stripped."""
    n = pixel_values.shape[0]
    input_ids = tokenizer([prompt] * n, return_tensors="pt")["input_ids"].to(pixel_values.device) if prompt else None
    out = model.generate(pixel_values=pixel_values, input_ids=input_ids, num_beams=beams, max_length=max_length,
                         min_length=min_length, do_sample=False)
    texts = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    stripped = prompt.strip().lower()
    return [t[len(stripped):].strip() if stripped and t.lower().startswith(stripped) else t for t in texts]
