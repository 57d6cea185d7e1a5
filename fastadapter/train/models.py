"""The model a run trains and the tokenizer it reads captions with.

`--model tiny` is a small random BLIP for quick runs, `base` BLIP-base's shapes with random weights (both from a
seed), a path a real checkpoint (with its own processor). Without a real checkpoint there is no BLIP tokenizer
offline: a word-level one is built from the training captions with the `tokenizers` library ([CLS] caption
[SEP], BLIP's [DEC] and [ENC] as special tokens) and saved with the checkpoints. A fingerprint of the base
weights is recorded, since random initialisation differs across transformers versions.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
TASKS = ("captioning", "retrieval", "paper")
TINY = dict(text=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                      encoder_hidden_size=64, max_position_embeddings=64),
            vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        image_size=64, patch_size=16, initializer_range=0.02), projection_dim=32)
# BlipVisionConfig's default initializer_range is 1e-10 (pretrained weights replace it): a random vision tower
# would then be blind (every image embeds alike), so the random bases use the text tower's 0.02.
RANDOM_VISION_INIT = 0.02


def words(caption: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", caption.lower())


def build_tokenizer(captions):
    """A word-level tokenizer over the captions' words: lowercased, [CLS] caption [SEP], padding [PAD]."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(SPECIAL + sorted({w for c in captions for w in words(c)} - set(SPECIAL)))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    built = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]",
                                    cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    built.add_special_tokens({"additional_special_tokens": ["[DEC]", "[ENC]"]})  # in the vocabulary already
    return built


def is_checkpoint(model: str) -> bool:
    return model not in ("tiny", "base")


def load_tokenizer(path):
    """The tokenizer of a folder (for the paper task's "RETRIEVAL,CAPTIONING", the retrieval checkpoint's)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path).split(",")[0])


def random_config(model: str, tokenizer):
    """BlipConfig of `tiny` or `base` with the tokenizer's special ids (tiny: its vocabulary size too)."""
    from transformers import BlipConfig

    ids = dict(bos_token_id=tokenizer.convert_tokens_to_ids("[DEC]"), pad_token_id=tokenizer.pad_token_id,
               sep_token_id=tokenizer.sep_token_id)
    if model == "tiny":
        return BlipConfig(text_config=dict(TINY["text"], vocab_size=len(tokenizer), **ids),
                          vision_config=TINY["vision"], projection_dim=TINY["projection_dim"],
                          image_text_hidden_size=TINY["projection_dim"])
    config = BlipConfig()
    config.vision_config.initializer_range = RANDOM_VISION_INIT
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"the captions' vocabulary ({len(tokenizer)} words) exceeds BLIP-base's "
                         f"{config.text_config.vocab_size}")
    for key, value in ids.items():
        setattr(config.text_config, key, value)
    return config


def model_class(task: str):
    from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

    from ..paper_model import BlipPaperModel

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return {"captioning": BlipForConditionalGeneration, "retrieval": BlipForImageTextRetrieval,
            "paper": BlipPaperModel}[task]


def checkpoint_paths(model: str, task: str) -> list[Path]:
    """The checkpoint folders --model names: one, or for the paper task "RETRIEVAL,CAPTIONING"."""
    paths = [Path(p) for p in model.split(",")] if task == "paper" else [Path(model)]
    if len(paths) != (2 if task == "paper" else 1) or not all(p.is_dir() for p in paths):
        what = "a retrieval and a captioning checkpoint folder, comma-separated" if task == "paper" else \
            "a checkpoint folder"
        raise FileNotFoundError(f"--model {model!r}: not 'tiny', 'base' or {what}")
    return paths


def build_model(model: str, task: str, tokenizer, seed: int):
    """(model, description of its base for the checkpoint)."""
    cls = model_class(task)
    if is_checkpoint(model):
        paths = checkpoint_paths(model, task)
        built = cls.from_pretrained(*paths)
        return built, {"model": ",".join(str(p.resolve()) for p in paths), "fingerprint": fingerprint(built)}
    torch.manual_seed(seed)
    built = cls(random_config(model, tokenizer))
    return built, {"model": model, "seed": seed, "fingerprint": fingerprint(built)}


def fingerprint(model) -> str:
    """sha256 over the base weights' names, shapes, dtypes and bytes (before adapters are added)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
