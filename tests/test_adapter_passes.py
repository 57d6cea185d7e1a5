"""benchmarks/adapter_passes.py: fused and eager forward+backward interleaved with their GEMMs alone."""

import pytest
import torch
from helpers import benchmarks_module

adapter_passes = benchmarks_module("adapter_passes")


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_fused_eager_and_their_gemms_are_timed_per_shape(autocast):
    timed = adapter_passes.fused_against_eager([(5, 8), (3, 4)], width=16, repeats=3, autocast=autocast)
    assert list(timed) == [(5, 8), (3, 4)]
    for medians in timed.values():
        assert medians.keys() == {"eager", "fused", "gemms"} and min(medians.values()) > 0
