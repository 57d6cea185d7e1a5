"""save_adapters / load_adapters: adapter weights (safetensors) and their config (JSON), nothing else.

The config travels inside the safetensors header too, so the weights file alone is self-describing and
one atomic rename publishes weights and config together; adapter_config.json is the readable copy and
must agree with it. Files are written to a temporary name, fsynced and renamed: a crash never leaves a
half-written file. Loading checks every name, shape and the config before copying a single value.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .config import AdapterConfig
from .patching import adapters, check_supported, patch, patch_state, unpatch

WEIGHTS_FILE = "adapters.safetensors"
CONFIG_FILE = "adapter_config.json"
FORMAT = "fastadapter-1"


class AdapterFileError(ValueError):
    """An adapter file is missing, corrupt, or does not match the model."""


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _header(model, config: AdapterConfig) -> dict:
    return {"format": FORMAT, "model_class": type(model).__name__, "config": config.to_dict()}


def save_adapters(model, path) -> Path:
    """Write the adapters of a patched model to directory `path`; returns the weights file's path."""
    modules = adapters(model)  # raises a clear error if the model is not patched
    tensors = {f"{site}.{name}": t.detach().contiguous().cpu()
               for site, module in modules.items() for name, t in module.state_dict().items()}
    header = _header(model, patch_state(model).config)
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    _atomic_write(weights, safetensors_bytes(tensors, metadata={"fastadapter": json.dumps(header)}))
    _atomic_write(directory / CONFIG_FILE, (json.dumps(header, indent=2) + "\n").encode())
    return weights


def read_adapters(path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The header and tensors of an adapter directory (or weights file), validated."""
    path = Path(path)
    weights = path / WEIGHTS_FILE if path.is_dir() else path
    if not weights.is_file():
        raise AdapterFileError(f"no adapter weights at {weights}")
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise AdapterFileError(f"{weights} is not a readable safetensors file (corrupt or truncated?): "
                               f"{error}") from error
    try:
        header = json.loads(metadata["fastadapter"])
        config = AdapterConfig.from_dict(header["config"])
    except (KeyError, TypeError, ValueError) as error:
        raise AdapterFileError(f"{weights} has no valid fastadapter header: {error}") from error
    if header.get("format") != FORMAT:
        raise AdapterFileError(f"{weights} has format {header.get('format')!r}; this fastadapter reads {FORMAT!r}")
    readable = weights.parent / CONFIG_FILE
    if readable.is_file():
        try:
            copy = json.loads(readable.read_text())
        except ValueError as error:
            raise AdapterFileError(f"{readable} is not valid JSON: {error}") from error
        if copy != header:
            raise AdapterFileError(f"{readable} does not match the config stored in {weights}")
    header["config"] = config
    return header, tensors


def load_adapters(model, path):
    """Load adapters saved by save_adapters into `model`. An unpatched model is patched with the saved
    config first. Nothing is changed unless every name, shape and the architecture match."""
    check_supported(model)
    header, tensors = read_adapters(path)
    saved = header["config"]
    state = patch_state(model)
    if state is not None and state.config.architecture() != saved.architecture():
        raise AdapterFileError(f"the adapters in {path} were saved with {saved.architecture()}, but the model is "
                               f"patched with {state.config.architecture()}")
    newly_patched = state is None
    if newly_patched:
        patch(model, saved)
    try:
        targets = {f"{site}.{name}": t for site, module in adapters(model).items()
                   for name, t in module.state_dict(keep_vars=True).items()}
        missing, unexpected = sorted(set(targets) - set(tensors)), sorted(set(tensors) - set(targets))
        if missing or unexpected:
            raise AdapterFileError(f"the adapters in {path} do not match {type(model).__name__} "
                                   f"(saved from {header.get('model_class')}): missing {missing[:3]}"
                                   f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}"
                                   f"{'...' if len(unexpected) > 3 else ''}")
        for key, target in targets.items():
            if tuple(tensors[key].shape) != tuple(target.shape):
                raise AdapterFileError(f"{key}: saved shape {tuple(tensors[key].shape)} does not match the "
                                       f"model's {tuple(target.shape)}")
    except BaseException:
        if newly_patched:
            unpatch(model)
        raise
    with torch.no_grad():
        for key, target in targets.items():
            target.copy_(tensors[key])
    return model
