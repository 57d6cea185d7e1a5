"""Caption and retrieval metrics for `fastadapter eval`: BLEU (sacrebleu), CIDEr-D (pycocoevalcap's pure-Python
scorer, on a simple lowercase word tokenizer: its PTB tokenizer is Java), recall@k both ways, and the degeneration
the paper watches: distinct-1/2, the within-caption repetition rate and the share of the most frequent caption (the
paper's 90% collapse)."""

from __future__ import annotations

import re
from collections import Counter

import torch


def tokens(caption: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", caption.lower())


def bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU-4 (sacrebleu, 0-100). An image's references are padded to the longest list by repeating its
    first: a repeated reference changes neither the clipped counts nor the closest length."""
    import sacrebleu

    width = max(len(r) for r in references)
    streams = [[r[i] if i < len(r) else r[0] for r in references] for i in range(width)]
    return sacrebleu.corpus_bleu(hypotheses, streams).score


def cider_d(hypotheses: list[str], references: list[list[str]]) -> float:
    from pycocoevalcap.cider.cider import Cider

    res = {i: [" ".join(tokens(h))] for i, h in enumerate(hypotheses)}
    gts = {i: [" ".join(tokens(r)) for r in refs] for i, refs in enumerate(references)}
    return float(Cider().compute_score(gts, res)[0])


def distinct(hypotheses: list[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the captions (0 when there are none)."""
    grams = [tuple(t[i:i + n]) for t in map(tokens, hypotheses) for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(hypotheses: list[str]) -> float:
    """The share of tokens that repeat an earlier token of the same caption."""
    total = repeated = 0
    for t in map(tokens, hypotheses):
        total += len(t)
        repeated += len(t) - len(set(t))
    return repeated / total if total else 0.0


def top_caption_share(hypotheses: list[str]) -> float:
    """The share of images given the most frequent caption."""
    return Counter(" ".join(tokens(h)) for h in hypotheses).most_common(1)[0][1] / len(hypotheses)


def degeneration(hypotheses: list[str]) -> dict[str, float]:
    return {"distinct_1": distinct(hypotheses, 1), "distinct_2": distinct(hypotheses, 2),
            "repetition_rate": repetition_rate(hypotheses), "top_caption_share": top_caption_share(hypotheses)}


def recall_at(similarity: torch.Tensor, positives: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Recall@k of each row's top-k columns containing a positive; similarity and positives (rows, columns)."""
    order = similarity.argsort(dim=1, descending=True)
    hits = positives.gather(1, order)
    return {f"r@{k}": float(hits[:, :k].any(1).float().mean()) for k in ks}


def retrieval_recalls(image_feat, text_feat, image_ids, text_ids) -> dict[str, float]:
    """Image -> text and text -> image recall@1/5/10 of the cosine similarities."""
    similarity = image_feat @ text_feat.t()
    positives = image_ids[:, None] == text_ids[None, :]
    i2t, t2i = recall_at(similarity, positives), recall_at(similarity.t(), positives.t())
    return {**{f"image_to_text_{k}": v for k, v in i2t.items()}, **{f"text_to_image_{k}": v for k, v in t2i.items()}}
