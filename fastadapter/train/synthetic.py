"""The built-in synthetic image-caption set: coloured shapes drawn with Pillow and captions that describe them
(fastadapter.bench.data.synthetic_pairs), written as an image-caption folder (data.py) so that training runs
offline out of the box."""

from __future__ import annotations

import json
from pathlib import Path

from ..bench.data import synthetic_pairs

SPLIT_SHARES = (("test", 0.1), ("validation", 0.1))  # the rest is train


def write_folder(folder, images: int = 64, image_size: int = 64, seed: int = 0) -> Path:
    """Writes `images` PNGs and a metadata.jsonl with a split per image (10% test, 10% validation); returns the
    folder. Each image has two captions: the plain description and a reworded one."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    held = {name: max(1, round(images * share)) for name, share in SPLIT_SHARES}
    rows = []
    for index, (image, caption) in enumerate(synthetic_pairs(images, image_size, seed)):
        name = f"{index:05d}.png"
        image.save(folder / name)
        split = ("test" if index < held["test"] else "validation" if index < held["test"] + held["validation"]
                 else "train")
        reworded = caption.replace(" on a ", " in front of a ", 1)
        rows.append({"file_name": name, "text": [caption, reworded], "split": split, "image_id": index})
    with open(folder / "metadata.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return folder
