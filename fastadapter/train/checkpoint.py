"""Adapter-only training checkpoints: out/checkpoints/epoch-NNNN/ holding the adapters (fastadapter.save_adapters,
safetensors), the other trained tensors (the temperature), the EMA adapters when distilling and the optimizer's
tensors (state.safetensors), the
epoch, the optimizer's hyperparameters and the base the run trained on (state.json), and the tokenizer. No pickle.
A checkpoint is written whole into a temporary folder and published by one rename, so an interrupted run never
leaves a half-written one; `latest` finds the newest complete one for --resume."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .. import load_adapters, save_adapters
from ..patching import patch_state

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
WEIGHTS = "weights.safetensors"  # the trained base weights: full fine-tuning's tower, --train-heads' heads


def _optimizer_tensors(optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors = {f"optimizer.{index}.{key}": value.detach().cpu().contiguous()
               for index, values in state["state"].items() for key, value in values.items()}
    return tensors, {"param_groups": state["param_groups"], "indices": sorted(state["state"])}


def save(folder, epoch: int, model, extra: dict[str, torch.Tensor], optimizer, tokenizer, info: dict,
         momentum=None) -> Path:
    """Writes out/checkpoints/epoch-NNNN atomically; returns its path. momentum: the EMA adapters, when
    distilling."""
    root = Path(folder) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:04d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        if patch_state(model) is not None:
            save_adapters(model, tmp / "adapters")
        trained = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
                   if p.requires_grad and ".adapter." not in n}  # full fine-tuning's tower, or --train-heads' heads
        if trained:
            save_file(trained, str(tmp / WEIGHTS))
        tensors, groups = _optimizer_tensors(optimizer)
        ema = {f"ema.{k}": v.cpu().contiguous() for k, v in momentum.tensors().items()} if momentum else {}
        save_file({**{f"extra.{k}": v.detach().cpu().contiguous() for k, v in extra.items()}, **tensors, **ema},
                  str(tmp / STATE_TENSORS))
        (tmp / STATE_JSON).write_text(json.dumps({"epoch": epoch, "optimizer": groups, **info}, indent=2) + "\n")
        tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if final.exists():  # an earlier run's checkpoint of this epoch: replaced whole
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def latest(folder) -> Path | None:
    root = Path(folder) / "checkpoints"
    found = sorted(p for p in root.glob("epoch-*") if (p / STATE_JSON).is_file()) if root.is_dir() else []
    return found[-1] if found else None


def read_info(path) -> dict:
    return json.loads((Path(path) / STATE_JSON).read_text())


def load_trained(model, path):
    """The checkpoint's adapters into the model, and the base weights it trained (full fine-tuning's tower,
    --train-heads' heads; checked: every saved name must exist in the model with its shape)."""
    path = Path(path)
    if (path / "adapters").is_dir():
        load_adapters(model, path / "adapters")
    if not (path / WEIGHTS).is_file():
        return
    weights = load_file(str(path / WEIGHTS))
    params = dict(model.named_parameters())
    bad = [n for n, t in weights.items() if n not in params or params[n].shape != t.shape]
    if bad:
        raise ValueError(f"{path / WEIGHTS} does not fit the model: {bad[:3]}")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)


def restore(path, model, extra: dict[str, torch.nn.Parameter], optimizer, momentum=None) -> dict:
    """Loads a checkpoint's adapters, extra tensors, optimizer state (and EMA adapters); returns its state.json."""
    path = Path(path)
    info = read_info(path)
    load_trained(model, path)
    tensors = load_file(str(path / STATE_TENSORS))
    with torch.no_grad():
        for name, parameter in extra.items():
            parameter.copy_(tensors[f"extra.{name}"])
    groups = info["optimizer"]
    state = {index: {key.split(".", 2)[2]: value for key, value in tensors.items()
                     if key.startswith(f"optimizer.{index}.")} for index in groups["indices"]}
    optimizer.load_state_dict({"state": state, "param_groups": groups["param_groups"]})
    if momentum is not None:
        momentum.load({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")})
    return info
