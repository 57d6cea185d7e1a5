"""fastadapter: fused residual adapters for fine-tuning Hugging Face BLIP.

Layers (docs/ARCHITECTURE.md): ops (fastadapter.ops: the fused ops and their backends) -> nn modules
(modules.py: Adapter) -> BLIP integration (config.py, patching.py, io.py, trainable.py) -> the bench and the
demo (fastadapter.bench, imported only by the CLI).
"""

import torch  # noqa: F401  (loads libtorch, which fastadapter._C links against)

try:
    from . import _C  # noqa: F401
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "fastadapter._C, the compiled extension, could not be imported. Build it from the source tree with "
        "`pip install --no-build-isolation -e .` (it needs torch installed first)."
    ) from error

from .config import AdapterConfig
from .io import AdapterFileError, load_adapters, save_adapters
from .modules import Adapter, ITCLoss
from .ops import (
    BackendInfo,
    BackendUnavailableError,
    adapter,
    backends,
    contrastive_loss,
    itc_loss,
    itm_margin_loss,
    lm_loss,
    release_cpu_cache,
    sample_hard_negatives,
)
from .paper_model import BlipPaperModel
from .patching import AlreadyPatchedError, UnsupportedModelError, adapters, patch, unpatch
from .trainable import TrainableSummary, trainable_summary

__all__ = ["adapter", "contrastive_loss", "itc_loss", "itm_margin_loss", "sample_hard_negatives", "lm_loss",
           "ITCLoss", "BlipPaperModel", "release_cpu_cache", "backends", "BackendInfo", "BackendUnavailableError",
           "AdapterConfig",
           "Adapter", "patch", "unpatch", "adapters", "save_adapters", "load_adapters", "AdapterFileError",
           "AlreadyPatchedError", "UnsupportedModelError", "trainable_summary", "TrainableSummary"]
__version__ = "0.1.0"
