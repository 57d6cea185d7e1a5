"""The whole-adapter Triton kernels (kernels/adapter_fused.py) compiled for sm_90 (and sm_80) without a GPU, with
the blocks the launcher picks (the method: tests/test_triton_compile.py): for every bottleneck class up to MAX_R
and every dtype at BLIP's width, each kernel fits shared memory (227 KiB on sm_90), has no local-memory
instruction inside a loop (the forward: none at all, since its programs take one block of rows each), and the
16-bit configurations run their dots on tensor cores (HGMMA or HMMA in the SASS). Values: tests/test_gpu.py."""

import pytest
from test_triton_compile import (  # skips this module with it where triton is missing or too old
    assert_fits_without_loop_spills,
    column_sums_launch,
    compile_in_child,
    compile_launches,
    print_compiled_cases,
)

BOTTLENECKS = (1, 48, 100, 256)  # every BLOCK_R of the tables (16, 64, 128, 256)
CASES = [(90, dtype, r, 768) for dtype in ("fp32", "bf16", "fp16") for r in BOTTLENECKS]
CASES += [(90, "bf16", 256, 96), (80, "bf16", 256, 768), (80, "fp32", 256, 768)]


def _compile_case(capability, dtype, r, width):
    import torch
    from fastadapter.kernels import adapter_fused as k

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    common = dict(PRECISION=k._precision(torch_dtype), ACT=0, LAYERNORM=True, HAS_BD=True, HAS_NB=True)

    def launch(backward):
        block_m, block_r, block_d, num_warps, num_stages = k.blocks(r, width, torch_dtype, backward)
        return (dict(common, BLOCK_M=block_m, BLOCK_R=block_r, BLOCK_D=block_d),
                dict(num_warps=num_warps, num_stages=num_stages))

    params = dict(WD=dtype, BD=dtype, NW=dtype, NB=dtype, WU=dtype)
    (forward, forward_options), (backward, backward_options) = launch(False), launch(True)
    launches = {
        "forward": (k._forward_kernel, dict(X=dtype, **params, BU=dtype, Y=dtype, H=dtype, MEAN="fp32", RSTD="fp32"),
                    dict(rows="i32", D="i32", r="i32", eps="fp32"), dict(forward, HAS_BU=True, STORE_H=True),
                    forward_options),
        "backward": (k._backward_kernel, dict(GY=dtype, X=dtype, H=dtype, MEAN="fp32", RSTD="fp32", **params,
                                              GX=dtype, GH=dtype, A=dtype, PARTIAL="fp32"),
                     dict(rows="i32", D="i32", r="i32"),
                     dict(backward, RECOMPUTE=False, INPUT_GRAD=True), dict(backward_options, enable_fp_fusion=False)),
        "column_sums": column_sums_launch(dtype, has_up=True),
    }
    return compile_launches(capability, launches)


@pytest.fixture(scope="module")
def compiled():
    return compile_in_child(__file__)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "sm{}-{}-r{}-D{}".format(*c))
def test_whole_adapter_kernels_compile_for_the_gpu(compiled, case):
    capability, dtype = case[:2]
    results = compiled[case]
    assert_fits_without_loop_spills(results, capability)
    assert not results["forward"]["local_memory"], f"the forward spills: {results['forward']['local_memory'][:3]}"
    if dtype != "fp32":
        for kernel in ("forward", "backward"):  # the column sums have no dot
            assert results[kernel]["tensor_cores"], (
                f"{kernel} has no tensor-core instruction in its SASS on sm_{capability}")


if __name__ == "__main__":  # the child: one JSON line per case
    print_compiled_cases(__file__, CASES, _compile_case)
