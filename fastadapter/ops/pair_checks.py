"""Argument checks shared by the ops over two sets of feature rows (contrastive, itm), in the caller's names:
tensors given, the temperature (a float, checked here, or a 0-d tensor, checked where reading it is free) and
the ids' shapes. Each error starts with the public function's name."""

from __future__ import annotations

import math

import torch


def check_tensors(op, **tensors):
    for name, value in tensors.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"fastadapter.{op}: {name} must be a torch.Tensor, got "
                            f"{'None' if value is None else type(value).__name__}")


def temperature_tensor(op, temperature, like):
    """The temperature as the 0-d tensor the op takes; a float is checked here, a tensor where reading it is free."""
    if isinstance(temperature, torch.Tensor):
        if temperature.dim() != 0 or not temperature.is_floating_point():
            raise ValueError(f"fastadapter.{op}: temperature must be a float or a 0-d floating-point tensor, got "
                             f"a {temperature.dtype} tensor of shape {tuple(temperature.shape)}")
        if temperature.device.type == "cpu" and not torch.compiler.is_compiling():
            check_temperature_value(op, temperature.item())
        return temperature.to(like.device)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"fastadapter.{op}: temperature must be a float or a 0-d tensor, got "
                        f"{type(temperature).__name__}")
    check_temperature_value(op, temperature)
    return torch.tensor(float(temperature), dtype=torch.float32, device=like.device)


def check_temperature_value(op, value):
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"fastadapter.{op}: temperature must be positive and finite, got {value}")


def check_ids(op, ids, features, name, features_name):
    """The ids' shape in the caller's names, before the positives are looked for (the op checks it too)."""
    if ids is not None and (not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.shape[0] != features.shape[0]):
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"fastadapter.{op}: {name} must have shape ({features.shape[0]},), one id per row of "
                         f"{features_name}, got {shape}")
