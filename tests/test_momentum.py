"""Momentum distillation (fastadapter.train.momentum): the EMA by hand, the swap restores the live adapters bit for
bit, BLIP's alpha ramp, the ITC soft targets from the EMA adapters' features, and the EMA through a checkpoint and
--resume."""

import pytest
import torch
from blip_fixtures import blip_config
from safetensors.torch import load_file
from test_objectives import _caption_batch, tokenizer
from transformers.models.blip import modeling_blip as mb

import fastadapter
from fastadapter.train import momentum, objectives, trainer


def _patched(seed=0):
    torch.manual_seed(seed)
    model = mb.BlipForImageTextRetrieval(blip_config())
    fastadapter.patch(model)
    with torch.no_grad():  # adapters away from their zero init, so that they change the features
        for site in fastadapter.adapters(model).values():
            for p in site.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return model


def test_ema_update_and_swap_by_hand():
    model = _patched()
    ema = momentum.MomentumAdapters(model, momentum=0.9)
    name, p = next(iter(ema.params.items()))
    start = p.detach().clone()
    with torch.no_grad():
        p.add_(1.0)
    ema.update()
    torch.testing.assert_close(ema.ema[name], 0.9 * start + 0.1 * (start + 1.0))
    live = p.detach().clone()
    with ema.swapped():
        assert torch.equal(p, ema.ema[name])
    assert torch.equal(p, live)


def test_alpha_ramps_over_the_first_epoch_only():
    assert momentum.ramped_alpha(0.4, 1, 5, 10) == pytest.approx(0.2)
    assert momentum.ramped_alpha(0.4, 1, 10, 10) == pytest.approx(0.4)
    assert momentum.ramped_alpha(0.4, 2, 1, 10) == pytest.approx(0.4)


def test_soft_targets_come_from_the_ema_adapters(monkeypatch):
    model = _patched(1)
    tok = tokenizer()
    batch = _caption_batch(tok, ["red circle", "blue circle", "a red circle"])
    objective = objectives.RetrievalObjective(model, tok, itm="margin").train()
    objective.momentum, objective.alpha = momentum.MomentumAdapters(model), 0.4
    with torch.no_grad():
        for p in objective.momentum.ema.values():
            p.add_(0.05 * torch.randn_like(p))  # an EMA apart from the live adapters
    seen = {}
    original = objective.itc.forward

    def spy(image_feat, text_feat, **kw):
        seen.update(kw)
        return original(image_feat, text_feat, **kw)

    monkeypatch.setattr(objective.itc, "forward", spy)
    objective(batch)
    with objective.momentum.swapped():
        _, image_m, text_m = objective.features(batch)
    assert seen["alpha"] == 0.4
    torch.testing.assert_close(seen["momentum_image_feat"], image_m)
    torch.testing.assert_close(seen["momentum_text_feat"], text_m)
    _, image_live, _ = objective.features(batch)
    assert not torch.allclose(image_live, image_m)


def test_distill_checkpoints_and_resumes_the_ema(tmp_path):
    opts = dict(out=str(tmp_path / "run"), task="retrieval", workers=0, distill=True, save_epochs=(1,))
    trainer.train(trainer.TrainOptions(epochs=1, **opts))
    saved = load_file(str(tmp_path / "run" / "checkpoints" / "epoch-0001" / "state.safetensors"))
    run = trainer.Run(trainer.TrainOptions(epochs=2, resume=True, **opts))
    assert run.momentum.ema and all(torch.equal(v, saved[f"ema.{k}"]) for k, v in run.momentum.ema.items())
    with pytest.raises(ValueError, match="--distill"):
        trainer.Run(trainer.TrainOptions(out=str(tmp_path / "c"), workers=0, distill=True))
