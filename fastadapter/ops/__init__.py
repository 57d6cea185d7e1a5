"""fastadapter's ops, one subpackage each (fastadapter/ops/<op>/: public function, eager reference, Python
backends, registration), with the shared backend registry (registry.py) and shared math (common.py)."""

from .adapter import adapter
from .common import release_cpu_cache
from .contrastive import contrastive_loss, itc_loss
from .itm import itm_margin_loss, sample_hard_negatives
from .lm_loss import lm_loss
from .registry import BackendInfo, BackendUnavailableError, backends

__all__ = ["adapter", "contrastive_loss", "itc_loss", "itm_margin_loss", "sample_hard_negatives", "lm_loss",
           "release_cpu_cache", "backends", "BackendInfo", "BackendUnavailableError"]
