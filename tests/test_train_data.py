"""The image-caption folder (fastadapter.train.data) and the built-in synthetic set: rows, captions per image,
splits (given, or a deterministic 10% by image), every bad row's error naming file and line, skip mode, and the
dataset + collate through a DataLoader with workers."""

import csv
import json

import pytest
import torch
from PIL import Image

from fastadapter.bench.data import caption_tokenizer
from fastadapter.train import data, synthetic


def _folder(tmp_path, rows, images=("a.png", "b.png", "c.png")):
    for name in images:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / name)
    with open(tmp_path / "metadata.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    return tmp_path


def test_synthetic_folder_reads_back(tmp_path):
    folder = data.read_folder(synthetic.write_folder(tmp_path, images=20, image_size=16))
    assert len(folder.samples) == 40 and not folder.skipped  # two captions per image
    counts = {name: len(folder.split(name)) for name in data.SPLITS}
    assert counts == {"train": 32, "validation": 4, "test": 4}
    by_image = {}
    for sample in folder.samples:
        by_image.setdefault(sample.image_id, set()).add((sample.split, sample.path))
    assert len(by_image) == 20 and all(len(v) == 1 for v in by_image.values())  # one split and file per image


def test_captions_as_rows_or_lists_and_ids(tmp_path):
    rows = [{"file_name": "a.png", "text": "one"}, {"file_name": "a.png", "text": "two"},
            {"file_name": "b.png", "text": ["three", "four"]}, {"file_name": "c.png", "text": "five", "image_id": 7}]
    folder = data.read_folder(_folder(tmp_path, rows))
    assert [s.caption for s in folder.samples] == ["one", "two", "three", "four", "five"]
    assert [s.image_id for s in folder.samples] == [0, 0, 1, 1, 2]


def test_without_splits_ten_percent_of_images_held_out_deterministically(tmp_path):
    names = [f"{i:03d}.png" for i in range(40)]
    rows = [{"file_name": n, "text": f"caption {k}"} for n in names for k in range(2)]
    first = data.read_folder(_folder(tmp_path, rows, names))
    held = {s.path.name for s in first.split("validation")}
    assert len(held) == 4 and all(sum(s.path.name == n for s in first.split("validation")) == 2 for n in held)
    _folder(tmp_path, rows[::-1], names)  # another row order: the same images held out
    assert {s.path.name for s in data.read_folder(tmp_path).split("validation")} == held


def test_csv_with_a_caption_column_and_a_list_cell(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["file_name", "caption", "split"], ["a.png", "red", "train"],
                          ["b.png", '["blue", "dark blue"]', "test"]])
    folder = data.read_folder(tmp_path, caption_column="caption")
    assert [(s.caption, s.split) for s in folder.samples] == [("red", "train"), ("blue", "test"),
                                                              ("dark blue", "test")]


@pytest.mark.parametrize("row, match", [
    ({"file_name": "missing.png", "text": "x"}, r"metadata.jsonl line 2: missing image 'missing.png'"),
    ({"file_name": "broken.png", "text": "x"}, r"metadata.jsonl line 2: corrupt image 'broken.png'"),
    ({"text": "x"}, r"metadata.jsonl line 2: missing column 'file_name'"),
    ({"file_name": "a.png"}, r"metadata.jsonl line 2: missing column 'text'"),
    ({"file_name": "a.png", "text": "  "}, r"metadata.jsonl line 2: empty caption"),
    ({"file_name": "a.png", "text": ["ok", ""]}, r"metadata.jsonl line 2: empty caption"),
    ({"file_name": "a.png", "text": "x", "split": "dev"}, r"metadata.jsonl line 2: unknown split 'dev'"),
    ({"file_name": "/etc/passwd", "text": "x"}, r"metadata.jsonl line 2: file_name '/etc/passwd' is absolute"),
    ({"file_name": "../a.png", "text": "x"}, r"metadata.jsonl line 2: file_name '../a.png' escapes the folder"),
])
def test_bad_rows_name_file_and_line_or_are_skipped(tmp_path, row, match):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")  # outside the folder, for the escaping name
    _folder(folder, [{"file_name": "a.png", "text": "good"}, row])
    with pytest.raises(data.BadSampleError, match=match):
        data.read_folder(folder)
    kept = data.read_folder(folder, on_bad_sample="skip")
    assert [s.caption for s in kept.samples] == ["good"] and len(kept.skipped) == 1
    assert kept.skipped[0].startswith("metadata.jsonl line 2:")


def test_folder_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no metadata.jsonl or metadata.csv"):
        data.read_folder(tmp_path)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "a.png", "text": "x"}\nnot json\n')
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(data.BadSampleError, match="metadata.jsonl line 2: not JSON"):
        data.read_folder(tmp_path)
    with pytest.raises(ValueError, match="on_bad_sample must be"):
        data.read_folder(tmp_path, on_bad_sample="ignore")


def test_dataset_and_collate_through_workers(tmp_path):
    folder = data.read_folder(synthetic.write_folder(tmp_path, images=10, image_size=20))
    dataset = data.CaptionDataset(folder.split("train"), data.image_processor(32))
    tokenizer = caption_tokenizer()
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2,
                                         collate_fn=lambda b: data.collate(b, tokenizer))
    batches = list(loader)
    assert sum(b["pixel_values"].shape[0] for b in batches) == len(dataset)
    first = batches[0]
    assert first["pixel_values"].shape == (4, 3, 32, 32) and first["pixel_values"].dtype == torch.float32
    assert first["input_ids"].shape == first["attention_mask"].shape and first["image_ids"].dtype == torch.long
