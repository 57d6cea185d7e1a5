"""BLIP's objectives (fastadapter.train.objectives) on tiny Hugging Face BLIP models: the captioning targets (BOS,
prompt and pad masks) on hand-made examples and the loss against the model's logits; the ITM 3B layout and labels
by hand; the retrieval loss (ITC + ITM with the drawn hard negatives) against a BLIP-style eager reference; grads
reach the adapters and the temperature after patch()."""

import pytest
import torch
import torch.nn.functional as F
from blip_fixtures import TEXT, blip_config
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast
from transformers.models.blip import modeling_blip as mb

import fastadapter
from fastadapter.train import objectives

WORDS = ["[PAD]", "[DEC]", "[SEP]", "[CLS]", "[UNK]", "[ENC]", "a", "picture", "of", "red", "blue", "circle"]


def tokenizer(with_enc=True):
    words = [w for w in WORDS if with_enc or w != "[ENC]"]
    vocab = {w: i for i, w in enumerate(words)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                     special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]")


def test_captioning_targets_by_hand():
    ids = torch.tensor([[3, 6, 7, 8, 9, 2, 0], [3, 6, 7, 8, 10, 11, 2]])
    mask = (ids != 0).long()
    new_ids, labels = objectives.captioning_targets(ids, mask, bos_token_id=1, prompt_tokens=4)
    assert new_ids.tolist() == [[1, 6, 7, 8, 9, 2, 0], [1, 6, 7, 8, 10, 11, 2]]
    assert labels.tolist() == [[-100, -100, -100, -100, 9, 2, -100], [-100, -100, -100, -100, 10, 11, 2]]
    assert ids[0, 0] == 3  # the input is not changed in place


def test_prompt_length_counts_the_start_token_not_the_sep():
    assert objectives.prompt_length(tokenizer(), "a picture of ") == 4
    assert objectives.prompt_length(tokenizer(), "") == 0


def _caption_batch(tok, captions, prompt=""):
    text = tok([prompt + c for c in captions], padding="longest", return_tensors="pt")
    g = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(len(captions), 3, 32, 32, generator=g), "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"], "image_ids": torch.arange(len(captions))}


@pytest.mark.parametrize("patched", [False, True])
def test_captioning_loss_is_smoothed_cross_entropy_on_the_targets(patched):
    torch.manual_seed(0)
    model = mb.BlipForConditionalGeneration(blip_config())
    if patched:
        fastadapter.patch(model)
    tok = tokenizer()
    batch = _caption_batch(tok, ["red circle", "blue circle a"], prompt="a picture of ")
    objective = objectives.CaptioningObjective(model, tok, prompt="a picture of ")
    loss, logs = objective(batch)
    ids, labels = objectives.captioning_targets(batch["input_ids"], batch["attention_mask"], TEXT["bos_token_id"], 4)
    with torch.no_grad():
        # without labels the patched model builds its logits as Hugging Face's does
        logits = model(pixel_values=batch["pixel_values"], input_ids=ids, attention_mask=batch["attention_mask"]).logits
    expected = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), labels[:, 1:].reshape(-1),
                               label_smoothing=0.1)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(logs["lm"], loss.detach())


def test_itm_layout_by_hand():
    text_ids = torch.tensor([[10, 11], [20, 21], [30, 31]])
    masks = torch.tensor([[1, 1], [1, 0], [1, 1]])
    images = torch.arange(3).float().reshape(3, 1, 1)
    texts, att, imgs, labels = objectives.itm_layout(text_ids, masks, images, torch.tensor([2, 0, 1]),
                                                     torch.tensor([1, 2, 0]))
    assert texts.tolist() == [[30, 31], [10, 11], [20, 21], [10, 11], [20, 21], [30, 31]]
    assert att.tolist() == [[1, 1], [1, 1], [1, 0], [1, 1], [1, 0], [1, 1]]
    assert imgs.flatten().tolist() == [0, 1, 2, 1, 2, 0]
    assert labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]


def _reference_retrieval(model, batch, negative_text, negative_image, enc_token_id, tau):
    """BLIP's retrieval forward written out (blip_retrieval.py), the negatives given."""
    image_embeds = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
    att = torch.ones(image_embeds.shape[:-1], dtype=torch.long)
    text = model.text_encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    image_feat = F.normalize(model.vision_proj(image_embeds[:, 0]), dim=-1)
    text_feat = F.normalize(model.text_proj(text[:, 0]), dim=-1)
    ids = batch["image_ids"]
    sim = image_feat @ text_feat.t() / tau
    pos = (ids[:, None] == ids[None, :]).float()
    targets = pos / pos.sum(1, keepdim=True)
    itc = 0.5 * (-(F.log_softmax(sim, 1) * targets).sum(1).mean() - (F.log_softmax(sim.t(), 1) * targets).sum(1).mean())
    enc = batch["input_ids"].clone()
    enc[:, 0] = enc_token_id
    m = batch["attention_mask"]
    pos_out = model.text_encoder(input_ids=enc, attention_mask=m, encoder_hidden_states=image_embeds,
                                 encoder_attention_mask=att).last_hidden_state[:, 0]
    text_all = torch.cat([enc[negative_text], enc])
    att_all = torch.cat([m[negative_text], m])
    image_all = torch.cat([image_embeds, image_embeds[negative_image]])
    neg_out = model.text_encoder(input_ids=text_all, attention_mask=att_all, encoder_hidden_states=image_all,
                                 encoder_attention_mask=torch.ones(image_all.shape[:-1], dtype=torch.long)
                                 ).last_hidden_state[:, 0]
    logits = model.itm_head(torch.cat([pos_out, neg_out]))
    labels = torch.cat([torch.ones(len(ids)), torch.zeros(2 * len(ids))]).long()
    return itc + F.cross_entropy(logits, labels)


def test_retrieval_loss_against_blip_written_out(monkeypatch):
    torch.manual_seed(1)
    model = mb.BlipForImageTextRetrieval(blip_config()).eval()
    tok = tokenizer()
    batch = _caption_batch(tok, ["red circle", "blue circle", "a red circle", "a blue circle"])
    batch["image_ids"] = torch.tensor([0, 1, 0, 2])
    drawn = {}

    def sampler(image_feat, text_feat, temperature, image_ids, text_ids, **kw):
        drawn["args"] = (image_feat.detach(), text_feat.detach(), float(temperature), image_ids, text_ids)
        drawn["out"] = fastadapter.sample_hard_negatives(image_feat, text_feat, temperature, image_ids, text_ids)
        return drawn["out"]

    monkeypatch.setattr(objectives, "sample_hard_negatives", sampler)
    objective = objectives.RetrievalObjective(model, tok)
    loss, logs = objective(batch)
    negative_text, negative_image = drawn["out"]
    ids = batch["image_ids"]
    assert (ids[negative_text] != ids).all() and (ids[negative_image] != ids).all()
    assert drawn["args"][2] == pytest.approx(0.07) and torch.equal(drawn["args"][3], ids)
    expected = _reference_retrieval(model, batch, negative_text, negative_image, tok.get_vocab()["[ENC]"], 0.07)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["itc"] + logs["itm"], loss.detach())


def test_retrieval_trains_adapters_and_temperature_only_after_patch():
    torch.manual_seed(2)
    model = mb.BlipForImageTextRetrieval(blip_config())
    fastadapter.patch(model)
    tok = tokenizer(with_enc=False)
    objective = objectives.RetrievalObjective(model, tok)
    assert objective.enc_token_id is None  # without [ENC] the first token stays as given
    batch = _caption_batch(tok, ["red circle", "blue circle", "a red circle"])
    loss, _ = objective(batch)
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter." in n or "adapter" in n.split(".")[-2] for n in trainable)
    assert all(model.get_parameter(n).grad is not None for n in trainable)
    assert objective.itc.temperature.grad is not None
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith(("itm_head", "vision_proj")))


def test_margin_option_uses_the_contrastive_features():
    torch.manual_seed(3)
    model = mb.BlipForImageTextRetrieval(blip_config()).eval()
    tok = tokenizer()
    batch = _caption_batch(tok, ["red circle", "blue circle"])
    objective = objectives.RetrievalObjective(model, tok, itm="margin")
    loss, logs = objective(batch)
    _, image_feat, text_feat = objective.features(batch)
    torch.testing.assert_close(logs["itm"], fastadapter.itm_margin_loss(image_feat, text_feat).detach())
    with pytest.raises(ValueError, match="itm must be 'head'"):
        objectives.RetrievalObjective(model, tok, itm="hinge")


def test_paper_objective_is_retrieval_plus_lm_on_one_vision_forward(monkeypatch):
    torch.manual_seed(4)
    model = fastadapter.BlipPaperModel(blip_config()).eval()
    fastadapter.patch(model)
    assert {site.split(".")[0] for site in fastadapter.adapters(model)} == {"vision_model", "text_encoder",
                                                                           "text_decoder"}
    tok = tokenizer()
    batch = _caption_batch(tok, ["red circle", "blue circle", "a red circle"])
    negatives = (torch.tensor([1, 2, 0]), torch.tensor([2, 0, 1]))
    monkeypatch.setattr(objectives, "sample_hard_negatives", lambda *a, **k: negatives)
    calls = []
    model.vision_model.register_forward_hook(lambda *a: calls.append(1))
    objective = objectives.PaperObjective(model, tok)
    loss, logs = objective(batch)
    assert len(calls) == 1  # one vision forward for ITC, ITM and LM
    retrieval, _ = objectives.RetrievalObjective(model, tok)(batch)
    ids, labels = objectives.captioning_targets(batch["input_ids"], batch["attention_mask"], TEXT["bos_token_id"])
    image_embeds = model.vision_model(pixel_values=batch["pixel_values"]).last_hidden_state
    logits = model.text_decoder(input_ids=ids, attention_mask=batch["attention_mask"],
                                encoder_hidden_states=image_embeds).logits
    lm = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), label_smoothing=0.1)
    torch.testing.assert_close(loss, retrieval + lm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logs["lm"], lm.detach(), rtol=1e-5, atol=1e-6)
