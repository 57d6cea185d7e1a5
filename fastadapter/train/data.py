"""An image-caption folder, the Hugging Face imagefolder convention: images under a folder and a `metadata.jsonl`
(or `metadata.csv`) with a relative `file_name`, a caption column (`text` by default), an optional `split`
(train / validation / test) and an optional `image_id`. Several captions per image: one row per caption, or a
list in the caption column. Without any split, a deterministic 10% of the images (never splitting one image's
captions) is held out as validation.

Every row is checked before training starts; a bad one (missing or corrupt image, missing column, empty caption,
unknown split, absolute or escaping file_name) is a BadSampleError naming the file and its line, or, with
on_bad_sample="skip", is left out and counted.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

SPLITS = ("train", "validation", "test")
METADATA = ("metadata.jsonl", "metadata.csv")
VALIDATION_SHARE = 0.1


class BadSampleError(ValueError):
    """A row of the metadata that cannot be used, named by file and line."""


@dataclass(frozen=True)
class Sample:
    path: Path
    caption: str
    image_id: int  # dense index of the row's image id over the whole folder (the positives of ITC/ITM)
    split: str
    where: str  # "metadata.jsonl line 4": for error messages


@dataclass
class Folder:
    samples: list[Sample]
    skipped: list[str] = field(default_factory=list)  # "where: why" of each bad row left out

    def split(self, name: str) -> list[Sample]:
        return [s for s in self.samples if s.split == name]


def _metadata_file(folder: Path) -> Path:
    found = [folder / name for name in METADATA if (folder / name).is_file()]
    if not found:
        raise FileNotFoundError(f"{folder}: no metadata.jsonl or metadata.csv (an image-caption folder needs one, "
                                "with file_name and a caption column)")
    if len(found) > 1:
        raise ValueError(f"{folder}: both metadata.jsonl and metadata.csv; keep one")
    return found[0]


def _rows(path: Path):
    """(line number, row dict) of the metadata file; a line that does not parse is a BadSampleError."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise BadSampleError(f"{path.name} line {number}: not JSON ({error.msg})") from None
                if not isinstance(row, dict):
                    raise BadSampleError(f"{path.name} line {number}: a row must be a JSON object")
                yield number, row
        return
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            yield reader.line_num, row


def _captions(value, where: str, column: str) -> list[str]:
    if isinstance(value, str) and value.lstrip().startswith("["):  # a list in a CSV cell
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    values = value if isinstance(value, list) else [value]
    captions = [v.strip() if isinstance(v, str) else None for v in values]
    if not captions or any(not c for c in captions):
        raise BadSampleError(f"{where}: empty caption in column {column!r}")
    return captions


def _image_path(folder: Path, file_name, where: str) -> Path:
    if not isinstance(file_name, str) or not file_name.strip():
        raise BadSampleError(f"{where}: file_name is empty")
    relative = Path(file_name)
    if relative.is_absolute():
        raise BadSampleError(f"{where}: file_name {file_name!r} is absolute; it must be relative to the folder")
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise BadSampleError(f"{where}: file_name {file_name!r} escapes the folder")
    if not path.is_file():
        raise BadSampleError(f"{where}: missing image {file_name!r}")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise BadSampleError(f"{where}: corrupt image {file_name!r} ({error})") from None
    return path


def _parse(folder: Path, number: int, row: dict, name: str, caption_column: str):
    where = f"{name} line {number}"
    for column in ("file_name", caption_column):
        if row.get(column) is None:
            raise BadSampleError(f"{where}: missing column {column!r}")
    split = row.get("split") or None
    if split is not None and split not in SPLITS:
        raise BadSampleError(f"{where}: unknown split {split!r}; expected one of {SPLITS}")
    path = _image_path(folder, row["file_name"], where)
    captions = _captions(row[caption_column], where, caption_column)
    image_id = str(row.get("image_id") or row["file_name"])
    return where, path, captions, image_id, split


def read_folder(folder, caption_column: str = "text", on_bad_sample: str = "stop") -> Folder:
    """Every usable row of the folder's metadata, one Sample per caption, splits assigned."""
    if on_bad_sample not in ("stop", "skip"):
        raise ValueError(f"on_bad_sample must be 'stop' or 'skip', got {on_bad_sample!r}")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    metadata = _metadata_file(folder)
    parsed, skipped = [], []
    for number, row in _rows(metadata):
        try:
            parsed.append(_parse(folder, number, row, metadata.name, caption_column))
        except BadSampleError as error:
            if on_bad_sample == "stop":
                raise
            skipped.append(str(error))
    if not parsed:
        raise BadSampleError(f"{metadata}: no usable rows" + (f" ({len(skipped)} skipped)" if skipped else ""))
    ids = {image_id: index for index, image_id in enumerate(dict.fromkeys(p[3] for p in parsed))}
    splits = _splits(parsed, ids)
    samples = [Sample(path, caption, ids[image_id], splits[image_id] if split is None else split, where)
               for where, path, captions, image_id, split in parsed for caption in captions]
    return Folder(samples, skipped)


def _splits(parsed, ids) -> dict[str, str]:
    """Each image's split where no row names one: all train when some rows do, else 10% validation by a hash of
    the image id (stable across runs, machines and row order)."""
    if any(p[4] is not None for p in parsed):
        return dict.fromkeys(ids, "train")
    ranked = sorted(ids, key=lambda image_id: hashlib.sha1(image_id.encode()).hexdigest())
    held = max(1, round(len(ranked) * VALIDATION_SHARE)) if len(ranked) > 1 else 0
    return {image_id: "validation" if rank < held else "train" for rank, image_id in enumerate(ranked)}


class CaptionDataset(torch.utils.data.Dataset):
    """A split's samples as dicts of pixel_values (C, H, W float32, by `processor`), caption and image_id."""

    def __init__(self, samples: list[Sample], processor):
        self.samples, self.processor = samples, processor

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        sample = self.samples[index]
        try:
            with Image.open(sample.path) as image:
                rgb = image.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:  # changed on disk since it was checked
            raise BadSampleError(f"{sample.where}: corrupt image {sample.path.name!r} ({error})") from None
        pixels = self.processor(images=rgb, return_tensors="pt")["pixel_values"][0]
        return {"pixel_values": pixels, "caption": sample.caption, "image_id": sample.image_id}


def collate(batch, tokenizer, max_length: int = 40, prompt: str = "") -> dict[str, torch.Tensor]:
    """A batch: stacked pixel values, the captions (with the prompt in front) tokenized and padded, image ids."""
    text = tokenizer([prompt + item["caption"] for item in batch], padding="longest", truncation=True,
                     max_length=max_length, return_tensors="pt")
    return {"pixel_values": torch.stack([item["pixel_values"] for item in batch]), "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "image_ids": torch.tensor([item["image_id"] for item in batch], dtype=torch.long)}


def image_processor(image_size: int, checkpoint: str | None = None):
    """The checkpoint's BlipProcessor image part where it has one; else BLIP's normalisation at image_size."""
    if checkpoint is not None and (Path(checkpoint) / "preprocessor_config.json").is_file():
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(checkpoint)
    from ..bench.data import image_processor as blip_processor

    return blip_processor(image_size)
