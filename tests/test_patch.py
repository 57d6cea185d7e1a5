"""patch / unpatch / save / load on tiny configs of every supported class."""

import copy
import json
import os

import pytest
import torch
from blip_fixtures import LAYERS, MODEL_NAMES, build, inputs
from safetensors import safe_open
from torch import nn

import fastadapter
from fastadapter import AdapterConfig, AdapterFileError, AlreadyPatchedError, UnsupportedModelError

SMALL = AdapterConfig(bottleneck=8)
FUSED_LOSS = {"BlipModel", "BlipForConditionalGeneration", "BlipForQuestionAnswering", "BlipTextLMHeadModel"}  # whose
# output() is a loss the patched model computes with a fused op


def assert_same_output(name, got, expected):
    """Bit-identical, except a loss a fused op computes: that equals Hugging Face's within float rounding."""
    if name in FUSED_LOSS:
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    else:
        assert torch.equal(got, expected)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_patch_is_exact_and_unpatch_restores(name):
    model, towers, output = build(name)
    model.eval()
    before_keys = list(model.state_dict())
    with torch.no_grad():
        expected = output(model)
    fastadapter.patch(model, SMALL)
    summary = fastadapter.trainable_summary(model)
    assert {t.tower: t.adapters for t in summary.towers if t.adapters} == {t: LAYERS[t] for t in towers}
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".adapter." not in n)
    assert summary.trainable == sum(p.numel() for n, p in model.named_parameters() if ".adapter." in n) > 0
    with torch.no_grad():
        assert_same_output(name, output(model), expected)  # zero up-projection: bit-identical but fused losses
    fastadapter.unpatch(model)
    assert list(model.state_dict()) == before_keys
    assert all(p.requires_grad for p in model.parameters())
    assert not any("adapter" in n for n, _ in model.named_modules())
    assert not model._forward_hooks and not model._forward_pre_hooks
    with torch.no_grad():
        assert torch.equal(output(model), expected)


def test_base_keys_are_unchanged_by_patching():
    model, _, _ = build("BlipForConditionalGeneration")
    base = set(model.state_dict())
    fastadapter.patch(model, SMALL)
    patched = set(model.state_dict())
    assert base <= patched and all(".adapter." in k for k in patched - base)


def test_patch_chosen_towers_and_overrides():
    model, _, _ = build("BlipForQuestionAnswering")
    fastadapter.patch(model, SMALL, towers=("text_decoder",), activation="silu")
    sites = fastadapter.adapters(model)
    assert len(sites) == LAYERS["text_decoder"] and all("text_decoder" in name for name in sites)
    assert all(a.config.activation == "silu" for a in sites.values())


def test_patch_twice():
    model, _, _ = build("BlipForConditionalGeneration")
    fastadapter.patch(model, SMALL)
    first = fastadapter.adapters(model)
    assert fastadapter.patch(model, SMALL) is model  # same config: no-op
    assert fastadapter.adapters(model) == first
    with pytest.raises(AlreadyPatchedError, match="already patched"):
        fastadapter.patch(model, SMALL.replace(bottleneck=4))
    fastadapter.unpatch(model)
    fastadapter.patch(model, SMALL.replace(bottleneck=4))
    assert all(a.config.bottleneck == 4 for a in fastadapter.adapters(model).values())


def test_unsupported_model():
    with pytest.raises(UnsupportedModelError, match="BlipForConditionalGeneration.*got Sequential"):
        fastadapter.patch(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="not patched"):
        fastadapter.unpatch(build("BlipVisionModel")[0])


def test_generate_after_patching():
    model, _, _ = build("BlipForConditionalGeneration")
    model.eval()
    pixels = inputs()["pixel_values"]
    expected = model.generate(pixel_values=pixels, max_new_tokens=5)
    fastadapter.patch(model, SMALL)
    assert torch.equal(model.generate(pixel_values=pixels, max_new_tokens=5), expected)
    fastadapter.patch(fastadapter.unpatch(model), SMALL.replace(init="normal"))
    assert model.generate(pixel_values=pixels, max_new_tokens=5).shape[0] == pixels.shape[0]


@pytest.mark.parametrize("name", ["BlipForConditionalGeneration", "BlipForImageTextRetrieval", "BlipVisionModel"])
@pytest.mark.parametrize("backend", ["auto", "eager"])
def test_training_step_changes_adapters_and_nothing_else(name, backend):
    model, _, output = build(name)
    fastadapter.patch(model, SMALL.replace(init="normal", backend=backend))
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    output(model).backward()
    optimizer.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(p, before[n])
        if ".adapter." in n:
            assert p.grad is not None, n
        else:
            assert not changed and p.grad is None, f"base parameter {n} changed"
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if ".up." in n)


def seeded_adapter_grads(backend, autocast=False):
    """The adapter grads of one backward of a patched BlipForConditionalGeneration in eval mode (no dropout),
    its adapters the same seeded draw whatever the backend; under torch.autocast(bfloat16) if asked."""
    model, _, output = build("BlipForConditionalGeneration")
    fastadapter.patch(model, SMALL.replace(init="normal", backend=backend))
    torch.manual_seed(1)
    for a in fastadapter.adapters(model).values():
        a.reset_parameters()
    model.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        output(model).backward()
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def test_fused_and_eager_adapters_train_the_same():
    fused, eager = seeded_adapter_grads("cpu"), seeded_adapter_grads("eager")
    for n, g in eager.items():
        torch.testing.assert_close(fused[n], g, rtol=1e-4, atol=1e-6)


def test_patched_model_trains_under_autocast():
    # The fused adapters take the bfloat16 activations of an autocast model with their float32 parameters and
    # return float32 grads. Their grads stay as close to float32 training as those of the eager adapters
    # (nn.Linear / LayerNorm, cast by PyTorch's own autocast rules) do: per tensor, max error / max magnitude.
    exact = seeded_adapter_grads("eager")

    def worst_error(grads):
        assert all(g.dtype == torch.float32 for g in grads.values())
        return max(((grads[n] - g).abs().max() / g.abs().max()).item() for n, g in exact.items())

    fused = worst_error(seeded_adapter_grads("cpu", autocast=True))
    eager = worst_error(seeded_adapter_grads("eager", autocast=True))
    assert 0 < fused <= eager, f"fused adapters under autocast: {fused:.3e}, eager adapters: {eager:.3e}"


def test_activation_checkpointing_gives_the_same_grads():
    # transformers' checkpointing (non-reentrant) drops what the op saved and reruns its forward in backward.
    grads, calls = [], []
    for checkpointing in (False, True):
        model, _, output = build("BlipForConditionalGeneration")
        fastadapter.patch(model, SMALL.replace(init="normal"))
        model.train()
        if checkpointing and hasattr(model, "activation_checkpointing_enable"):  # the current name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif checkpointing:  # older transformers have only this one (deprecated where both exist)
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        count = [0]
        for a in fastadapter.adapters(model).values():
            a.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        torch.manual_seed(3)  # the same dropout masks in both runs
        output(model).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
        calls.append(count[0])
    assert calls[1] > calls[0], f"adapter forwards without / with checkpointing: {calls}"  # some were rerun
    assert grads[0].keys() == grads[1].keys()
    for n, g in grads[0].items():
        assert torch.equal(grads[1][n], g), n


def test_trainable_summary_matches_the_paper_for_blip_base():
    from transformers import BlipTextConfig
    from transformers.models.blip.modeling_blip_text import BlipTextLMHeadModel

    decoder = BlipTextLMHeadModel(BlipTextConfig())  # BLIP-base text decoder shapes
    decoder.tie_weights()  # the bare head is tied at construction in transformers 5, not in 4.5x
    fastadapter.patch(decoder)
    summary = fastadapter.trainable_summary(decoder)
    assert summary.decoder_full_untied == 161_323_580
    assert summary.decoder_full_tied == 137_881_148
    assert summary.adapters == 12
    assert summary.trainable == 12 * (2 * 768 * 256 + 3 * 256 + 768)
    assert "161,323,580" in str(summary) and "137,881,148" in str(summary)


# --- adapter I/O -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_save_load_round_trip_is_bit_exact(name, tmp_path):
    model, _, output = build(name)
    fastadapter.patch(model, SMALL.replace(init="normal"))
    fastadapter.save_adapters(model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", "adapters.safetensors"]
    fresh, _, _ = build(name)
    fastadapter.load_adapters(fresh, tmp_path)  # patches the unpatched model with the saved config
    saved = {n: p for n, p in model.state_dict().items() if ".adapter." in n}
    loaded = {n: p for n, p in fresh.state_dict().items() if ".adapter." in n}
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[n], loaded[n]) for n in saved)
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(output(model), output(fresh))


def test_load_refuses_a_mismatched_model_without_touching_it(tmp_path):
    model, _, _ = build("BlipForConditionalGeneration")
    fastadapter.patch(model, SMALL)
    fastadapter.save_adapters(model, tmp_path)
    other, _, _ = build("BlipForImageTextRetrieval")  # text encoder instead of decoder
    keys = list(other.state_dict())
    with pytest.raises(AdapterFileError, match="do not match BlipForImageTextRetrieval"):
        fastadapter.load_adapters(other, tmp_path)
    assert list(other.state_dict()) == keys and fastadapter.patching.patch_state(other) is None

    patched, _, _ = build("BlipForConditionalGeneration")
    fastadapter.patch(patched, SMALL.replace(bottleneck=4))
    snapshot = copy.deepcopy(patched.state_dict())
    with pytest.raises(AdapterFileError, match="saved with"):
        fastadapter.load_adapters(patched, tmp_path)
    assert all(torch.equal(snapshot[k], v) for k, v in patched.state_dict().items())


def test_load_refuses_corrupt_files(tmp_path):
    model, _, _ = build("BlipTextLMHeadModel")
    fastadapter.patch(model, SMALL)
    weights = fastadapter.save_adapters(model, tmp_path)
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(AdapterFileError, match="corrupt or truncated"):
        fastadapter.load_adapters(build("BlipTextLMHeadModel")[0], tmp_path)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(AdapterFileError, match="corrupt or truncated"):
        fastadapter.load_adapters(build("BlipTextLMHeadModel")[0], tmp_path)
    with pytest.raises(AdapterFileError, match="no adapter weights"):
        fastadapter.load_adapters(build("BlipTextLMHeadModel")[0], tmp_path / "missing")


def test_load_refuses_a_config_that_disagrees_with_the_weights(tmp_path):
    model, _, _ = build("BlipTextLMHeadModel")
    fastadapter.patch(model, SMALL)
    fastadapter.save_adapters(model, tmp_path)
    config = tmp_path / "adapter_config.json"
    config.write_text(config.read_text().replace('"gelu"', '"relu"'))
    with pytest.raises(AdapterFileError, match="does not match the config stored in"):
        fastadapter.load_adapters(build("BlipTextLMHeadModel")[0], tmp_path)


def test_save_is_atomic(tmp_path, monkeypatch):
    model, _, _ = build("BlipTextLMHeadModel")
    fastadapter.patch(model, SMALL)
    fastadapter.save_adapters(model, tmp_path)
    good = (tmp_path / "adapters.safetensors").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with torch.no_grad():
        next(iter(fastadapter.adapters(model).values())).up.weight.add_(1)
    with pytest.raises(OSError, match="disk full"):
        fastadapter.save_adapters(model, tmp_path)
    assert (tmp_path / "adapters.safetensors").read_bytes() == good  # the old file is intact
    assert sorted(os.listdir(tmp_path)) == ["adapter_config.json", "adapters.safetensors"]  # no temp files left


def _rewrite_header(directory, change):
    """The saved adapter files with their config changed by change(config dict), as another version would save."""
    from safetensors.torch import load_file, save_file

    weights = directory / "adapters.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        header = json.loads(f.metadata()["fastadapter"])
    change(header["config"])
    save_file(load_file(str(weights)), str(weights), metadata={"fastadapter": json.dumps(header)})
    (directory / "adapter_config.json").write_text(json.dumps(header, indent=2) + "\n")


def test_a_file_from_an_older_version_loads_and_a_newer_one_is_refused(tmp_path):
    model, _, output = build("BlipTextLMHeadModel")
    fastadapter.patch(model, SMALL.replace(init="normal"))
    fastadapter.save_adapters(model, tmp_path)
    _rewrite_header(tmp_path, lambda config: [config.pop(k) for k in ("backend", "recompute", "init")])
    fresh, _, _ = build("BlipTextLMHeadModel")
    fastadapter.load_adapters(fresh, tmp_path)  # the missing fields take their defaults
    assert fastadapter.patching.patch_state(fresh).config.backend == "auto"
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(output(model), output(fresh))
    # only the fields that shape the weights decide whether a file fits: another backend still loads
    other, _, _ = build("BlipTextLMHeadModel")
    fastadapter.patch(other, SMALL.replace(backend="eager", recompute=True))
    fastadapter.load_adapters(other, tmp_path)

    _rewrite_header(tmp_path, lambda config: config.update(from_the_future=True))
    with pytest.raises(AdapterFileError, match=r"unknown field\(s\) \['from_the_future'\]"):
        fastadapter.load_adapters(build("BlipTextLMHeadModel")[0], tmp_path)
