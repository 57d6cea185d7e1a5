"""`fastadapter eval`: a run's checkpoint on a split of an image-caption folder. Captioning: the LM loss, BLEU and
CIDEr-D of the generated captions (one per image, against all of its captions) and the degeneration metrics
beside them; retrieval: the ITC + ITM loss and recall@1/5/10 both ways."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import load_file

from . import checkpoint, data, inference, metrics, models, objectives


def _data_folder(path: Path, data_dir):
    if data_dir is not None:
        return Path(data_dir)
    synthetic = path.parents[1] / "synthetic-data"  # a run on the built-in set keeps it in its folder
    if synthetic.is_dir():
        return synthetic
    raise FileNotFoundError(f"--data is needed: {path} was not trained on the built-in synthetic set")


def _loss(objective, samples, processor, tokenizer, prompt, batch_size):
    loader = torch.utils.data.DataLoader(data.CaptionDataset(samples, processor), batch_size=batch_size,
                                         collate_fn=lambda b: data.collate(b, tokenizer, prompt=prompt))
    total = 0.0
    with torch.no_grad():
        for batch in loader:
            total += objective(batch)[0].item() * batch["pixel_values"].shape[0]
    return total / len(samples)


def _images(samples):
    """(path, its captions) per image, in the split's order."""
    by_image = {}
    for s in samples:
        by_image.setdefault(s.image_id, (s.path, []))[1].append(s.caption)
    return list(by_image.values())


def _pixels(processor, paths):
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return processor(images=images, return_tensors="pt")["pixel_values"]


def _captioning(model, tokenizer, samples, processor, info, opts):
    prompt = info.get("prompt", "")
    report = {"lm_loss": _loss(objectives.CaptioningObjective(model, tokenizer, prompt), samples, processor,
                               tokenizer, prompt, opts["batch_size"])}
    images = _images(samples)
    hypotheses = []
    for start in range(0, len(images), opts["batch_size"]):
        chunk = images[start:start + opts["batch_size"]]
        hypotheses += inference.captions(model, tokenizer, _pixels(processor, [p for p, _ in chunk]), prompt,
                                         opts["beams"])
    references = [refs for _, refs in images]
    report.update(bleu=metrics.bleu(hypotheses, references), cider_d=metrics.cider_d(hypotheses, references),
                  **metrics.degeneration(hypotheses))
    report["examples"] = [{"image": p.name, "caption": h} for (p, _), h in zip(images[:5], hypotheses)]
    return report


def _retrieval(model, tokenizer, samples, processor, path, opts):
    objective = objectives.RetrievalObjective(model, tokenizer)
    with torch.no_grad():
        objective.itc.temperature.copy_(load_file(str(path / checkpoint.STATE_TENSORS))["extra.temperature"])
    report = {"loss": _loss(objective, samples, processor, tokenizer, "", opts["batch_size"])}
    batch = data.collate([{"pixel_values": _pixels(processor, [s.path])[0], "caption": s.caption,
                           "image_id": s.image_id} for s in samples], tokenizer)
    with torch.no_grad():
        _, image_feat, text_feat = objective.features(batch)
    ids = batch["image_ids"]
    first = {int(i): n for n, i in reversed(list(enumerate(ids.tolist())))}  # one row per image
    rows = torch.tensor(sorted(first.values()))
    report.update(metrics.retrieval_recalls(image_feat[rows], text_feat, ids[rows], ids))
    return report


def evaluate(adapters, data_dir=None, model=None, split="test", batch_size=16, beams=inference.BEAMS) -> dict:
    path = inference.resolve(adapters)
    built, tokenizer, info = inference.load(path, model)
    folder = data.read_folder(_data_folder(path, data_dir), info.get("caption_column", "text"))
    samples = folder.split(split)
    if not samples:
        raise ValueError(f"the {split!r} split of the folder is empty")
    base = info["base"]["model"]
    processor = data.image_processor(built.config.vision_config.image_size,
                                     base if models.is_checkpoint(base) else None)
    opts = {"batch_size": batch_size, "beams": beams}
    report = {"checkpoint": str(path), "task": info["task"], "split": split, "samples": len(samples)}
    if info["task"] == "captioning":
        report.update(_captioning(built, tokenizer, samples, processor, info, opts))
    else:
        report.update(_retrieval(built, tokenizer, samples, processor, path, opts))
    return report
