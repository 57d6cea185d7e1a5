"""fastadapter: fused residual adapters for fine-tuning Hugging Face BLIP."""

try:
    from . import _C  # noqa: F401
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "fastadapter._C, the compiled extension, could not be imported. Build it from the source tree with "
        "`pip install --no-build-isolation -e .` (it needs torch installed first)."
    ) from error

from .backends import BackendInfo, BackendUnavailableError, backends
from .ops import adapter

__all__ = ["adapter", "backends", "BackendInfo", "BackendUnavailableError"]
__version__ = "0.1.0"
