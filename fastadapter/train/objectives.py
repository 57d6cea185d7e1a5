"""BLIP's training objectives for Hugging Face BLIP models, as BLIP trains them (Hugging Face's forwards compute
none of the retrieval losses and not BLIP's captioning targets).

Captioning (BlipForConditionalGeneration): the caption's first token (the tokenizer's [CLS]) becomes the decoder's
BOS ([DEC], bos_token_id), padding and an optional prompt ("a picture of ") are masked out of the labels, and the
LM loss uses label smoothing 0.1 (BLIP's; the model computes it, with fastadapter.lm_loss once patched).

Retrieval (BlipForImageTextRetrieval): ITC on the projected, normalised [CLS] features with a learnable
temperature (fastadapter.ITCLoss: 0.07, clamped to [0.001, 0.5]), every caption of one image a positive; plus ITM
on the model's itm_head: each positive pair, and for each image one hard negative text and for each text one hard
negative image (fastadapter.sample_hard_negatives over softmax(s / tau) with the positives masked), a 2-way cross
entropy over the 3B pairs. The ITM text starts with the encoder token: [ENC] where the tokenizer has it (BLIP adds
it as an extra special token), otherwise the first token as given. Or, with itm="margin", the paper's margin form
(fastadapter.itm_margin_loss) on the contrastive features instead of the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ITCLoss, itm_margin_loss, sample_hard_negatives

IGNORE = -100


def prompt_length(tokenizer, prompt: str) -> int:
    """Tokens of the prompt as it starts a caption: its ids with the start token, without a trailing [SEP]."""
    if not prompt:
        return 0
    ids = tokenizer(prompt)["input_ids"]
    return len(ids) - 1 if ids and ids[-1] == tokenizer.sep_token_id else len(ids)


def captioning_targets(input_ids, attention_mask, bos_token_id: int, prompt_tokens: int = 0):
    """(decoder input ids, labels): the first token replaced by BOS; labels are the ids with padding and the
    prompt's tokens set to -100 (the model shifts them: labels[t] is predicted from ids[:t])."""
    ids = input_ids.clone()
    ids[:, 0] = bos_token_id
    labels = ids.masked_fill(attention_mask == 0, IGNORE)
    labels[:, :prompt_tokens] = IGNORE
    return ids, labels


class CaptioningObjective(nn.Module):
    """BLIP's captioning loss on a BlipForConditionalGeneration. Sets the decoder's label_smoothing."""

    def __init__(self, model, tokenizer, prompt: str = "", label_smoothing: float = 0.1):
        super().__init__()
        self.model = model
        self.bos_token_id = model.config.text_config.bos_token_id
        self.prompt, self.prompt_tokens = prompt, prompt_length(tokenizer, prompt)
        model.text_decoder.label_smoothing = label_smoothing

    def forward(self, batch):
        ids, labels = captioning_targets(batch["input_ids"], batch["attention_mask"], self.bos_token_id,
                                         self.prompt_tokens)
        out = self.model(pixel_values=batch["pixel_values"], input_ids=ids, attention_mask=batch["attention_mask"],
                         labels=labels)
        return out.loss, {"lm": out.loss.detach()}


def itm_layout(text_ids, attention_mask, image_embeds, negative_text, negative_image):
    """The 2B negative pairs after the B positives: (image i, text negative_text[i]) for each image, then (image
    negative_image[j], text j) for each text. Returns the negatives' text ids, masks and image embeddings, and the
    3B labels (1 = match)."""
    texts = torch.cat([text_ids[negative_text], text_ids])
    masks = torch.cat([attention_mask[negative_text], attention_mask])
    images = torch.cat([image_embeds, image_embeds[negative_image]])
    n = text_ids.shape[0]
    labels = torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(2 * n, dtype=torch.long)]).to(text_ids.device)
    return texts, masks, images, labels


def encoder_token_id(tokenizer):
    """[ENC]'s id where the tokenizer has it, else None (the first token stays as given)."""
    vocab = tokenizer.get_vocab()
    return vocab.get("[ENC]")


class RetrievalObjective(nn.Module):
    """ITC + ITM on a BlipForImageTextRetrieval; owns the learnable temperature (its only parameter)."""

    def __init__(self, model, tokenizer, itm: str = "head", backend: str = "auto"):
        super().__init__()
        if itm not in ("head", "margin"):
            raise ValueError(f"itm must be 'head' (BLIP's itm_head cross entropy) or 'margin', got {itm!r}")
        self.model, self.itm, self.backend = model, itm, backend  # backend: of the ITC, sampler and margin ops
        self.itc = ITCLoss(backend=backend)
        self.momentum, self.alpha = None, 0.0  # momentum distillation (momentum.py), set by the trainer
        self.enc_token_id = encoder_token_id(tokenizer)

    def features(self, batch, image_embeds=None):
        """(image embeddings, normalised image and text [CLS] projections)."""
        m = self.model
        if image_embeds is None:
            image_embeds = m.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
        text = m.text_encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return (image_embeds, F.normalize(m.vision_proj(image_embeds[:, 0]), dim=-1),
                F.normalize(m.text_proj(text[:, 0]), dim=-1))

    def _matching(self, batch, image_embeds, image_feat, text_feat):
        ids = batch["image_ids"]
        text_ids = batch["input_ids"].clone()
        if self.enc_token_id is not None:
            text_ids[:, 0] = self.enc_token_id
        negative_text, negative_image = sample_hard_negatives(image_feat, text_feat, self.itc.temperature.detach(),
                                                              ids, ids, backend=self.backend)
        texts, masks, images, labels = itm_layout(text_ids, batch["attention_mask"], image_embeds, negative_text,
                                                  negative_image)
        texts, masks = torch.cat([text_ids, texts]), torch.cat([batch["attention_mask"], masks])
        images = torch.cat([image_embeds, images])
        joint = self.model.text_encoder(input_ids=texts, attention_mask=masks, encoder_hidden_states=images,
                                        encoder_attention_mask=torch.ones(images.shape[:-1], dtype=torch.long,
                                                                          device=images.device)).last_hidden_state
        return F.cross_entropy(self.model.itm_head(joint[:, 0]).float(), labels)

    def soft_targets(self, batch) -> dict:
        """itc_loss's momentum arguments when distilling: the EMA adapters' features. Computed before any live
        forward: swapping the weights in place would invalidate what that forward saved for backward."""
        if self.momentum is None or self.alpha <= 0 or not self.training:
            return {}
        with self.momentum.swapped():
            _, momentum_image, momentum_text = self.features(batch)
        return dict(momentum_image_feat=momentum_image, momentum_text_feat=momentum_text, alpha=self.alpha)

    def forward(self, batch, image_embeds=None, soft=None):
        """soft: soft_targets(batch), when the caller computed image_embeds (it must call soft_targets first)."""
        soft = self.soft_targets(batch) if soft is None else soft
        image_embeds, image_feat, text_feat = self.features(batch, image_embeds)
        ids = batch["image_ids"]
        itc = self.itc(image_feat, text_feat, image_ids=ids, text_ids=ids, **soft)
        if self.itm == "margin":
            itm = itm_margin_loss(image_feat, text_feat, image_ids=ids, text_ids=ids, backend=self.backend)
        else:
            itm = self._matching(batch, image_embeds, image_feat, text_feat)
        return itc + itm, {"itc": itc.detach(), "itm": itm.detach()}


class PaperObjective(nn.Module):
    """The paper's combined setup on a fastadapter.BlipPaperModel: ITC + ITM + LM from one vision forward, the
    same captions for all three (BLIP's pre-training form: no prompt; the decoder's first token is BOS)."""

    def __init__(self, model, tokenizer, itm: str = "head", label_smoothing: float = 0.1, backend: str = "auto"):
        super().__init__()
        self.model = model
        self.retrieval = RetrievalObjective(model, tokenizer, itm, backend)
        self.bos_token_id = model.config.text_config.bos_token_id
        model.text_decoder.label_smoothing = label_smoothing

    @property
    def itc(self):
        return self.retrieval.itc

    def forward(self, batch):
        soft = self.retrieval.soft_targets(batch)
        image_embeds = self.model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
        matching, logs = self.retrieval(batch, image_embeds, soft)
        ids, labels = captioning_targets(batch["input_ids"], batch["attention_mask"], self.bos_token_id)
        lm = self.model.caption_loss(image_embeds, ids, batch["attention_mask"], labels)
        return matching + lm, {**logs, "lm": lm.detach()}
