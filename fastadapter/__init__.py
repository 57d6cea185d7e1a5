"""fastadapter: fused residual adapters for fine-tuning Hugging Face BLIP."""

import torch  # noqa: F401  (loads libtorch, which fastadapter._C links against)

try:
    from . import _C  # noqa: F401
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "fastadapter._C, the compiled extension, could not be imported. Build it from the source tree with "
        "`pip install --no-build-isolation -e .` (it needs torch installed first)."
    ) from error

from .backends import BackendInfo, BackendUnavailableError, backends
from .ops import adapter, release_cpu_cache

__all__ = ["adapter", "release_cpu_cache", "backends", "BackendInfo", "BackendUnavailableError"]
__version__ = "0.1.0"

from .config import AdapterConfig
from .io import AdapterFileError, load_adapters, save_adapters
from .modules import Adapter
from .patching import AlreadyPatchedError, UnsupportedModelError, adapters, patch, unpatch
from .summary import TrainableSummary, trainable_summary
from . import demo  # noqa: E402

__all__ += ["AdapterConfig", "Adapter", "patch", "unpatch", "adapters", "save_adapters", "load_adapters",
            "AdapterFileError", "AlreadyPatchedError", "UnsupportedModelError", "trainable_summary",
            "TrainableSummary"]
