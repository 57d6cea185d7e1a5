"""trainable_summary: trainable against total parameters, per tower, and the paper's reference figure."""

from __future__ import annotations

from dataclasses import dataclass

from transformers.models.blip import modeling_blip_text

from .config import TOWERS
from .patching import ADAPTER_ATTR, check_supported, patch_state, tower_of, tower_prefixes


@dataclass(frozen=True)
class TowerCount:
    tower: str
    total: int
    trainable: int
    adapters: int


@dataclass(frozen=True)
class TrainableSummary:
    towers: list[TowerCount]
    total: int
    trainable: int
    adapters: int
    # Full fine-tuning of the text decoder (the paper's basic fine-tune), base parameters only:
    decoder_full_tied: int | None  # the tied LM-head weight counted once
    decoder_full_untied: int | None  # counted separately, as the paper did (161,323,580 for BLIP-base)

    def __str__(self) -> str:
        lines = ["| tower | parameters | trainable | adapters |", "|---|---:|---:|---:|"]
        for t in self.towers:
            lines.append(f"| {t.tower} | {t.total:,} | {t.trainable:,} | {t.adapters} |")
        lines.append(f"| **all** | {self.total:,} | {self.trainable:,} | {self.adapters} |")
        if self.decoder_full_tied is not None:
            lines.append("")
            lines.append(f"Full fine-tuning of the text decoder would train {self.decoder_full_untied:,} parameters "
                         f"counting the tied LM-head weight separately (as the paper did), "
                         f"{self.decoder_full_tied:,} with tying; the adapters train {self.trainable:,} "
                         f"({self.adapters} adapters).")
        return "\n".join(lines)


def _is_adapter_param(name: str) -> bool:
    return f".{ADAPTER_ATTR}." in f".{name}"


def decoder_full_finetune(decoder) -> tuple[int, int]:
    """(tied, untied) parameter counts of a BlipTextLMHeadModel's base parameters."""
    tied = sum(p.numel() for n, p in decoder.named_parameters() if not _is_adapter_param(n))
    head, embeddings = decoder.get_output_embeddings(), decoder.get_input_embeddings()
    shared = head.weight.numel() if head is not None and head.weight is embeddings.weight else 0
    return tied, tied + shared


def trainable_summary(model) -> TrainableSummary:
    check_supported(model)
    prefixes = tower_prefixes(model)
    counts = {tower: [0, 0] for tower in (*TOWERS, "other")}
    for name, p in model.named_parameters():
        tower = tower_of(name, prefixes) or "other"
        counts[tower][0] += p.numel()
        counts[tower][1] += p.numel() if p.requires_grad else 0
    state = patch_state(model)
    n_adapters = {tower: 0 for tower in counts}
    for site in state.sites if state else []:
        n_adapters[site.tower] += 1
    rows = [TowerCount(t, total, trainable, n_adapters[t]) for t, (total, trainable) in counts.items() if total]
    decoder = next((m for m in model.modules() if isinstance(m, modeling_blip_text.BlipTextLMHeadModel)), None)
    tied, untied = decoder_full_finetune(decoder) if decoder is not None else (None, None)
    return TrainableSummary(rows, sum(r.total for r in rows), sum(r.trainable for r in rows),
                            sum(r.adapters for r in rows), tied, untied)
