"""patch(model, backbone="lean"): the frozen blocks through the lean ops give the eager model's outputs and every
adapter gradient within float rounding, on every supported class, with padding, causal and cross attention;
the eager fallbacks (attentions asked for, dropout, an unfrozen block, no grad) take Hugging Face's path; generate
gives the same tokens; checkpointing still works; unpatch restores; and a tiny model trains alike."""

import contextlib

import pytest
import torch
from blip_fixtures import MODEL_NAMES, TEXT, VISION, build, inputs
from helpers import assert_close
from transformers import BlipVisionConfig
from transformers.models.blip.modeling_blip import BlipVisionModel

import fastadapter
from fastadapter import backbone
from fastadapter.bench.measure import saved_bytes

SMALL = fastadapter.AdapterConfig(bottleneck=8, init="normal")


@contextlib.contextmanager
def counting_lean_ops(monkeypatch):
    """How many times each lean op runs (wrapped where fastadapter.backbone calls them)."""
    counts = {"attention": 0, "mlp": 0}
    for name, op in (("attention", backbone.frozen_attention), ("mlp", backbone.frozen_mlp)):
        def counted(*args, _op=op, _name=name, **kwargs):
            counts[_name] += 1
            return _op(*args, **kwargs)
        monkeypatch.setattr(backbone, f"frozen_{name}", counted)
    yield counts


def _patched(name, lean, train=True):
    """A fixture model with the same adapters (seeded) on the eager or the lean backbone, and its output."""
    model, _, output = build(name)
    torch.manual_seed(1)
    fastadapter.patch(model, SMALL.replace(backbone="lean" if lean else "eager"))
    model.train(train)
    return model, output


def _projected(name):
    """For the bare towers: a fixed random projection of the last hidden state. (The fixtures' mean square of a
    LayerNorm output is ~1 whatever the input, so its gradient is rounding noise.)"""
    def run(model):
        g = torch.Generator().manual_seed(7)
        x = {k: v.to(torch.get_default_dtype()) if v.is_floating_point() else v for k, v in inputs().items()}
        if name == "BlipVisionModel":
            hidden = model(pixel_values=x["pixel_values"]).last_hidden_state
        else:
            enc = torch.randn(2, 7, TEXT["encoder_hidden_size"], generator=g)
            hidden = model(input_ids=x["input_ids"], encoder_hidden_states=enc).last_hidden_state
        return (hidden * torch.randn(hidden.shape, generator=g)).sum()
    return run


def _outputs_and_grads(name, lean, dtype=torch.float32, run=None, **config):
    with _default_dtype(dtype):
        model, _, output = build(name)
        if run is None and name in ("BlipVisionModel", "BlipTextModel"):
            run = _projected(name)
    model.train()
    torch.manual_seed(1)  # the same adapter weights for eager and lean
    fastadapter.patch(model, SMALL.replace(backbone="lean" if lean else "eager", **config))
    with _default_dtype(dtype):
        value = (run or output)(model)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return value.detach(), dict(zip(trained, torch.autograd.grad(value, list(trained.values()))))


@contextlib.contextmanager
def _default_dtype(dtype):
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def _assert_same(eager, lean, tol):
    assert_close(lean[0], eager[0].double(), tol, "output")
    assert eager[1].keys() == lean[1].keys()
    for n, g in eager[1].items():
        assert_close(lean[1][n], g.double(), tol, f"grad {n}")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_lean_equals_eager_in_float64(name, monkeypatch):
    with counting_lean_ops(monkeypatch) as counts:
        lean = _outputs_and_grads(name, True, torch.float64, backend="eager")
    assert counts["attention"] > 0 and counts["mlp"] > 0, counts
    _assert_same(_outputs_and_grads(name, False, torch.float64, backend="eager"), lean, 1e-10)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_lean_equals_eager_in_float32_with_fused_adapters(name):
    _assert_same(_outputs_and_grads(name, False), _outputs_and_grads(name, True), 2e-3)


def _captioning_with_padding(model):
    """Padded captions: the text decoder's causal 4-D mask with padding, and cross-attention to the image."""
    batch = inputs(batch=3, length=7, seed=4)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, 4:] = 0
    mask[2, 6:] = 0
    return model(**batch, attention_mask=mask, labels=batch["input_ids"].masked_fill(mask == 0, -100)).loss


def _retrieval_with_padding(model):
    batch = inputs(batch=3, length=7, seed=5)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 3:] = 0
    return model(**batch, attention_mask=mask, use_itm_head=True).itm_score.sum()


@pytest.mark.parametrize("name, run", [("BlipForConditionalGeneration", _captioning_with_padding),
                                       ("BlipForImageTextRetrieval", _retrieval_with_padding),
                                       ("BlipForQuestionAnswering", None)])
def test_padding_causal_and_cross_attention(name, run):
    _assert_same(_outputs_and_grads(name, False, torch.float64, run, backend="eager"),
                 _outputs_and_grads(name, True, torch.float64, run, backend="eager"), 1e-10)


def test_output_attentions_falls_back_and_returns_the_attentions(monkeypatch):
    results = []
    for lean in (False, True):
        model, _ = _patched("BlipForConditionalGeneration", lean)
        batch = inputs()
        with counting_lean_ops(monkeypatch) as counts:
            out = model(**batch, labels=batch["input_ids"], output_attentions=True)
            out.loss.backward()
        assert counts == {"attention": 0, "mlp": 0} or not lean
        results.append(out)
    eager, lean = results
    assert len(lean.attentions) == len(eager.attentions) > 0
    for a, b in zip(eager.attentions, lean.attentions):
        torch.testing.assert_close(b, a)
    torch.testing.assert_close(lean.loss, eager.loss)
    with counting_lean_ops(monkeypatch) as counts:  # the next call without attentions runs lean again
        model(**batch, labels=batch["input_ids"]).loss.backward()
    assert counts["attention"] > 0


def test_generate_gives_the_same_tokens():
    tokens = []
    for lean in (False, True):
        model, _ = _patched("BlipForConditionalGeneration", lean, train=False)
        tokens.append(model.generate(pixel_values=inputs()["pixel_values"], max_new_tokens=6, num_beams=2))
    assert torch.equal(tokens[0], tokens[1])


def test_dropout_and_unfrozen_blocks_take_the_eager_path(monkeypatch):
    model, _, output = build("BlipForConditionalGeneration")
    fastadapter.patch(model, SMALL.replace(backbone="lean"))
    model.train()
    for layer in model.vision_model.encoder.layers:
        layer.self_attn.dropout.p = 0.1
    with counting_lean_ops(monkeypatch) as counts:
        output(model).backward()
    vision_layers, decoder_layers = len(model.vision_model.encoder.layers), TEXT["num_hidden_layers"]
    # Vision layer 0 and decoder layer 0's self-attention have inputs that need no gradient: eager. Dropout
    # takes the vision attention eager; the MLPs stay lean.
    assert counts["mlp"] == (vision_layers - 1) + decoder_layers
    assert counts["attention"] == 2 * (decoder_layers - 1) + 1
    model.eval()  # dropout is off in eval mode: lean again (under grad)
    with counting_lean_ops(monkeypatch) as counts:
        output(model).backward()
    assert counts["attention"] == (vision_layers - 1) + 2 * (decoder_layers - 1) + 1
    qkv = model.vision_model.encoder.layers[2].self_attn.qkv.weight.requires_grad_()
    with counting_lean_ops(monkeypatch) as counts:
        output(model).backward()
    assert counts["attention"] == (vision_layers - 2) + 2 * (decoder_layers - 1) + 1 and qkv.grad.abs().sum() > 0


def test_activation_checkpointing_gives_the_same_grads():
    """Checkpointing wraps the layers, whose forward the lean backbone leaves alone: its rerun in backward takes
    the lean path again. (Reentrant checkpointing needs enable_input_require_grads, which BLIP's text embeddings
    refuse in transformers 5.x: an in-place add on a leaf.)"""
    grads = []
    for checkpointing in (False, True):
        model, output = _patched("BlipForConditionalGeneration", True)
        if checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None)  # the current name, where it exists
            kwargs = {"use_reentrant": False}
            if enable is not None:
                enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        output(model).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    for n, g in grads[0].items():
        torch.testing.assert_close(grads[1][n], g, rtol=1e-5, atol=1e-7)


def test_unpatch_restores_every_module():
    model, _, output = build("BlipForQuestionAnswering")
    keys = list(model.state_dict())
    expected = output(model).detach()
    fastadapter.patch(model, SMALL.replace(init="zero", backbone="lean"))
    assert list(model.state_dict()) != keys  # adapters added
    assert any(backbone.LEAN_ATTR in m.__dict__ for m in model.modules())
    fastadapter.unpatch(model)
    assert list(model.state_dict()) == keys
    assert not any(backbone.LEAN_ATTR in m.__dict__ or "forward" in m.__dict__ for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    torch.testing.assert_close(output(model).detach(), expected, rtol=0, atol=0)


def test_an_activation_it_lacks_is_refused_before_anything_changes():
    model, _, _ = build("BlipVisionModel")
    model.encoder.layers[1].mlp.config.hidden_act = "mish"  # the vision config, shared by every layer
    with pytest.raises(ValueError, match="activation 'mish'"):
        fastadapter.patch(model, SMALL.replace(backbone="lean"))
    assert fastadapter.patching.patch_state(model) is None
    assert all(p.requires_grad for p in model.parameters())
    assert not any(m.__dict__.get("forward") for m in model.modules())


def test_lean_saves_a_fraction_of_what_eager_saves():
    """A vision tower of 65 tokens: eager keeps each layer's (65, 65) probabilities per head, q/k/v, the MLP's
    pre-activation and both norms' inputs; lean the layer input, the attention output and the MLP input."""
    saved = {}
    pixels = torch.randn(2, 3, 64, 64)
    for lean in (False, True):
        torch.manual_seed(0)
        model = BlipVisionModel(BlipVisionConfig(**{**VISION, "image_size": 64}))
        fastadapter.patch(model, SMALL.replace(backbone="lean" if lean else "eager"))
        model.train()
        saved[lean], _ = saved_bytes(lambda: model(pixel_values=pixels).last_hidden_state, exclude=model.parameters())
    assert saved[True] < 0.4 * saved[False], saved


def test_lean_and_eager_train_alike():
    """A tiny captioning model, 8 AdamW steps: the same losses step by step, within float rounding's drift."""
    losses = {}
    for lean in (False, True):
        model, output = _patched("BlipForConditionalGeneration", lean)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
        losses[lean] = []
        for _ in range(10):
            loss = output(model)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses[lean].append(loss.item())
    assert losses[False][-1] < losses[False][0] - 0.1  # it trains
    torch.testing.assert_close(torch.tensor(losses[True]), torch.tensor(losses[False]), rtol=1e-4, atol=1e-5)


def test_lean_under_autocast_matches_eager_under_autocast():
    """bf16 autocast on CPU: the lean ops run on inputs cast to bf16, as the Linear layers around them do."""
    results = []
    for lean in (False, True):
        model, output = _patched("BlipForConditionalGeneration", lean)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = output(model)
        trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
        grads = torch.autograd.grad(loss, list(trained.values()))
        assert all(g.dtype == torch.float32 for g in grads)
        results.append((loss.detach(), dict(zip(trained, grads))))
    _assert_same(results[0], results[1], 3e-2)
