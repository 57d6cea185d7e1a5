"""Tiny BLIP models of every supported class, with inputs, for patching tests."""

import torch
from transformers import BlipConfig, BlipTextConfig, BlipVisionConfig
from transformers.models.blip import modeling_blip as mb
from transformers.models.blip import modeling_blip_text as mt

TEXT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            encoder_hidden_size=32, max_position_embeddings=64, bos_token_id=1, pad_token_id=0, sep_token_id=2)
VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=3, num_attention_heads=4, image_size=32,
              patch_size=8, initializer_range=0.02)
LAYERS = {"vision": VISION["num_hidden_layers"], "text_encoder": TEXT["num_hidden_layers"],
          "text_decoder": TEXT["num_hidden_layers"]}


def blip_config():
    return BlipConfig(text_config=TEXT, vision_config=VISION, projection_dim=16, image_text_hidden_size=16)


def inputs(batch=2, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(batch, 3, 32, 32, generator=g),
            "input_ids": torch.randint(3, TEXT["vocab_size"], (batch, length), generator=g)}


def build(name, seed=0, device="cpu"):
    """(model, towers it has, function model -> a differentiable output tensor), on `device`."""
    model, towers, output = _build(name, seed, device)
    return model.to(device), towers, output


def _build(name, seed, device):
    torch.manual_seed(seed)
    x = {k: v.to(device) for k, v in inputs().items()}
    enc = torch.randn(2, 7, TEXT["encoder_hidden_size"], generator=torch.Generator().manual_seed(seed)).to(device)
    if name == "BlipForConditionalGeneration":
        model = mb.BlipForConditionalGeneration(blip_config())
        return model, ("vision", "text_decoder"), lambda m: m(**x, labels=x["input_ids"]).loss
    if name == "BlipForImageTextRetrieval":
        model = mb.BlipForImageTextRetrieval(blip_config())
        return model, ("vision", "text_encoder"), lambda m: m(**x, use_itm_head=True).itm_score.sum()
    if name == "BlipForQuestionAnswering":
        model = mb.BlipForQuestionAnswering(blip_config())
        return model, ("vision", "text_encoder", "text_decoder"), lambda m: m(**x, labels=x["input_ids"]).loss
    if name == "BlipModel":
        model = mb.BlipModel(blip_config())
        return model, ("vision", "text_encoder"), lambda m: m(**x, return_loss=True).loss
    if name == "BlipVisionModel":
        model = mb.BlipVisionModel(BlipVisionConfig(**VISION))
        return model, ("vision",), lambda m: m(pixel_values=x["pixel_values"]).last_hidden_state.pow(2).mean()
    if name == "BlipTextModel":
        model = mt.BlipTextModel(BlipTextConfig(**TEXT))
        return model, ("text_encoder",), lambda m: m(input_ids=x["input_ids"], encoder_hidden_states=enc
                                                      ).last_hidden_state.pow(2).mean()
    if name == "BlipTextLMHeadModel":
        model = mt.BlipTextLMHeadModel(BlipTextConfig(**TEXT))
        return model, ("text_decoder",), lambda m: m(input_ids=x["input_ids"], encoder_hidden_states=enc,
                                                     labels=x["input_ids"]).loss
    raise KeyError(name)


MODEL_NAMES = ("BlipForConditionalGeneration", "BlipForImageTextRetrieval", "BlipForQuestionAnswering", "BlipModel",
               "BlipVisionModel", "BlipTextModel", "BlipTextLMHeadModel")
