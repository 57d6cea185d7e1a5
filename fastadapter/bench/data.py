"""Image-caption batches made on the spot with Pillow, for the demo and benchmarks (no downloads)."""

from __future__ import annotations

import random
from functools import lru_cache

import torch
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
           "purple": (140, 60, 180), "white": (245, 245, 245), "black": (15, 15, 15), "orange": (245, 140, 20)}
SHAPES = ("circle", "square", "triangle")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def synthetic_pairs(n: int, size: int, seed: int = 0) -> list[tuple[Image.Image, str]]:
    """n (image, caption) pairs: a coloured shape on a coloured background, and its description."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        colour, background = rng.sample(sorted(COLOURS), 2)
        shape = rng.choice(SHAPES)
        image = Image.new("RGB", (size, size), COLOURS[background])
        draw = ImageDraw.Draw(image)
        lo, hi = sorted(rng.sample(range(size // 8, size - size // 8), 2))
        box = (lo, lo, max(hi, lo + size // 8), max(hi, lo + size // 8))
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        else:
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=COLOURS[colour])
        pairs.append((image, f"a {colour} {shape} on a {background} background"))
    return pairs


@lru_cache(maxsize=1)
def caption_tokenizer():
    """A word-level tokenizer over the synthetic captions' words (real runs use the checkpoint's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIAL + sorted({"a", "on", "background", *COLOURS, *SHAPES})
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]")


def image_processor(size: int):
    try:  # transformers >= 5 without torchvision
        from transformers import BlipImageProcessorPil as Processor
    except ImportError:
        from transformers import BlipImageProcessor as Processor
    return Processor(size={"height": size, "width": size})


def caption_batch(batch: int, image_size: int, bos_token_id: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """pixel_values, input_ids, attention_mask and labels for BlipForConditionalGeneration. As in BLIP,
    the caption starts with the decoder's BOS token and padding is ignored by the loss."""
    images, captions = zip(*synthetic_pairs(batch, image_size, seed))
    pixels = image_processor(image_size)(images=list(images), return_tensors="pt")["pixel_values"]
    text = caption_tokenizer()(list(captions), padding=True, return_tensors="pt")
    bos = torch.full((batch, 1), bos_token_id, dtype=torch.long)
    input_ids = torch.cat([bos, text["input_ids"]], dim=1)
    attention_mask = torch.cat([torch.ones_like(bos), text["attention_mask"]], dim=1)
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"pixel_values": pixels, "input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
