"""The fused losses patch() swaps into Hugging Face BLIP: the same value and gradients as Hugging Face's own loss
(the adapters', and logit_scale's when it trains), in either return format; the config turns them off."""

import pytest
import torch
from blip_fixtures import build, inputs

import fastadapter
from fastadapter import AdapterConfig, fused_losses

CONFIG = AdapterConfig(bottleneck=8, init="normal")


def _loss_and_grads(fused, return_dict=True):
    model, _, _ = build("BlipModel")
    fastadapter.patch(model, CONFIG, fused_losses=fused)
    model.logit_scale.requires_grad_(True)  # so that the temperature's gradient is checked too
    torch.manual_seed(1)
    for adapter in fastadapter.adapters(model).values():
        adapter.reset_parameters()
    out = model(**inputs(batch=5), return_loss=True, return_dict=return_dict)
    loss = out.loss if return_dict else out[0]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named])
    return loss, dict(zip([n for n, _ in named], grads)), out


@pytest.mark.parametrize("return_dict", [True, False])
def test_blip_model_loss_is_the_fused_op_and_equals_hugging_face(return_dict, monkeypatch):
    calls = []
    real = fused_losses.itc_loss
    monkeypatch.setattr(fused_losses, "itc_loss", lambda *a, **k: calls.append(k["backend"]) or real(*a, **k))
    loss, grads, out = _loss_and_grads(True, return_dict)
    assert calls == ["auto"]
    expected, expected_grads, expected_out = _loss_and_grads(False, return_dict)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert grads.keys() == expected_grads.keys() and "logit_scale" in grads
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    logits = (out.logits_per_image, expected_out.logits_per_image) if return_dict else (out[1], expected_out[1])
    assert torch.equal(*logits)  # the forward's in-batch logits are Hugging Face's own


def test_without_return_loss_there_is_no_loss_and_no_fused_call(monkeypatch):
    model, _, _ = build("BlipModel")
    fastadapter.patch(model, CONFIG)
    monkeypatch.setattr(fused_losses, "itc_loss", lambda *a, **k: pytest.fail("loss computed unasked"))
    assert model(**inputs()).loss is None


def test_per_sequence_sums_of_reduction_none():
    """Hugging Face's reduction="none" is a sum per sequence; the fused loss keeps that meaning."""
    model, _, _ = build("BlipTextLMHeadModel")
    enc = torch.randn(2, 7, 32)
    ids = inputs()["input_ids"]
    expected = model(input_ids=ids, encoder_hidden_states=enc, labels=ids, reduction="none").loss
    fastadapter.patch(model, CONFIG.replace(init="zero"))
    got = model(input_ids=ids, encoder_hidden_states=enc, labels=ids, reduction="none").loss
    assert got.shape == expected.shape == (2,)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_config_turns_fused_losses_off_and_unpatch_restores(monkeypatch):
    model, _, _ = build("BlipModel")
    monkeypatch.setattr(fused_losses, "itc_loss", lambda *a, **k: pytest.fail("fused loss used"))
    fastadapter.patch(model, CONFIG, fused_losses=False)
    assert model(**inputs(), return_loss=True).loss is not None
    fastadapter.unpatch(model)
    fastadapter.patch(model, CONFIG)
    fastadapter.unpatch(model)
    assert model(**inputs(), return_loss=True).loss is not None


def test_loss_backend_follows_the_config_where_the_loss_has_it():
    assert fused_losses.loss_backend(AdapterConfig(backend="eager")) == "eager"
    assert fused_losses.loss_backend(AdapterConfig(backend="torch")) == "torch"
    assert fused_losses.loss_backend(AdapterConfig(backend="cuda")) == "auto"  # no cuda backend of the loss yet


LM_MODELS = ("BlipForConditionalGeneration", "BlipForQuestionAnswering", "BlipTextLMHeadModel")


def _lm_loss_and_grads(name, fused, smoothing):
    model, _, output = build(name)
    fastadapter.patch(model, CONFIG, fused_losses=fused)
    for decoder in (m for m in model.modules() if isinstance(m, fused_losses.modeling_blip_text.BlipTextLMHeadModel)):
        decoder.label_smoothing = smoothing
    torch.manual_seed(1)
    for adapter in fastadapter.adapters(model).values():
        adapter.reset_parameters()
    loss = output(model)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return loss, dict(zip([n for n, _ in named], torch.autograd.grad(loss, [p for _, p in named])))


@pytest.mark.parametrize("name", LM_MODELS)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_lm_loss_is_fused_and_equals_hugging_face(name, smoothing, monkeypatch):
    calls = []
    real = fused_losses.lm_loss
    monkeypatch.setattr(fused_losses, "lm_loss", lambda *a, **k: calls.append(k["reduction"]) or real(*a, **k))
    loss, grads = _lm_loss_and_grads(name, True, smoothing)
    assert len(calls) == 1 and calls[0] in ("mean", "none")  # the reduction the model asked for
    expected, expected_grads = _lm_loss_and_grads(name, False, smoothing)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert grads.keys() == expected_grads.keys() and grads
    for key in grads:
        torch.testing.assert_close(grads[key], expected_grads[key], rtol=1e-4, atol=1e-6, msg=key)


def test_captioning_with_labels_builds_no_logits_and_generate_is_unchanged():
    model, _, _ = build("BlipForConditionalGeneration")
    x = inputs()
    model.eval()
    with torch.no_grad():
        before = model.generate(pixel_values=x["pixel_values"], max_length=6)
    fastadapter.patch(model, CONFIG.replace(init="zero"))
    out = model(**x, labels=x["input_ids"])
    assert out.logits is None and out.loss is not None
    assert model(**x).logits.shape[-1] == model.config.text_config.vocab_size  # without labels: the logits
    with torch.no_grad():
        assert torch.equal(model.generate(pixel_values=x["pixel_values"], max_length=6), before)


def test_a_call_with_labels_builds_no_kv_cache():
    """Hugging Face turns use_cache off for a call with labels; the labels taken for lm_loss must not turn it on."""
    model, _, _ = build("BlipTextLMHeadModel")
    fastadapter.patch(model)
    x = inputs()
    out = model(input_ids=x["input_ids"], encoder_hidden_states=torch.randn(2, 7, 32), labels=x["input_ids"])
    assert out.loss is not None
    assert getattr(out, "past_key_values", None) is None and getattr(out, "cache", None) is None
