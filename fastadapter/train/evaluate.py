"""`fastadapter eval`: a run's checkpoint on a split of an image-caption folder. Captioning: the LM loss, BLEU and
CIDEr-D of the generated captions (one per image, against all of its captions) and the degeneration metrics
beside them; retrieval: the ITC + ITM loss and recall@1/5/10 both ways; the paper task: its loss and both."""

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


def _generation(model, tokenizer, samples, processor, prompt, opts):
    """BLEU, CIDEr-D and the degeneration metrics of one generated caption per image, and a few examples."""
    images = _images(samples)
    hypotheses = []
    for start in range(0, len(images), opts["batch_size"]):
        chunk = images[start:start + opts["batch_size"]]
        hypotheses += inference.captions(model, tokenizer, _pixels(processor, [p for p, _ in chunk]), prompt,
                                         opts["beams"])
    references = [refs for _, refs in images]
    report = {"bleu": metrics.bleu(hypotheses, references), "cider_d": metrics.cider_d(hypotheses, references),
              **metrics.degeneration(hypotheses)}
    report["examples"] = [{"image": p.name, "caption": h} for (p, _), h in zip(images[:5], hypotheses)]
    return report


def _recalls(objective, tokenizer, samples, processor):
    """Recall@1/5/10 both ways: one image row per image against every caption of the split."""
    batch = data.collate([{"pixel_values": _pixels(processor, [s.path])[0], "caption": s.caption,
                           "image_id": s.image_id} for s in samples], tokenizer)
    retrieval = objective.retrieval if isinstance(objective, objectives.PaperObjective) else objective
    with torch.no_grad():
        _, image_feat, text_feat = retrieval.features(batch)
    ids = batch["image_ids"]
    first = {int(i): n for n, i in reversed(list(enumerate(ids.tolist())))}
    rows = torch.tensor(sorted(first.values()))
    return metrics.retrieval_recalls(image_feat[rows], text_feat, ids[rows], ids)


def _objective(model, tokenizer, info, path):
    task, prompt = info["task"], info.get("prompt", "")
    if task == "captioning":
        return objectives.CaptioningObjective(model, tokenizer, prompt)
    objective = (objectives.RetrievalObjective(model, tokenizer) if task == "retrieval"
                 else objectives.PaperObjective(model, tokenizer))
    with torch.no_grad():
        objective.itc.temperature.copy_(load_file(str(path / checkpoint.STATE_TENSORS))["extra.temperature"])
    return objective


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
    task, prompt = info["task"], info.get("prompt", "")
    objective = _objective(built, tokenizer, info, path)
    report = {"checkpoint": str(path), "task": task, "split": split, "samples": len(samples),
              "lm_loss" if task == "captioning" else "loss": _loss(objective, samples, processor, tokenizer, prompt,
                                                                   batch_size)}
    if task in ("captioning", "paper"):
        report.update(_generation(built, tokenizer, samples, processor, prompt, opts))
    if task in ("retrieval", "paper"):
        report.update(_recalls(objective, tokenizer, samples, processor))
    return report
