"""The contrastive op's Triton kernels compiled for sm_80 and sm_90 without a GPU (the method and its reasons:
tests/test_triton_compile.py): for every dtype, BLIP's width (256) and an odd one (257, padded to 512), with and
without soft targets, each kernel must fit the device's shared memory and keep its registers: no local-memory
instruction inside its loop over the other side's tiles. Values are checked on a GPU by tests/test_gpu.py."""

import itertools

import pytest

triton = pytest.importorskip("triton")
if tuple(int(part) for part in triton.__version__.split(".")[:2]) < (3, 4):
    pytest.skip(f"the compile API used here is triton >= 3.4's; this is triton {triton.__version__}",
                allow_module_level=True)

from test_triton_compile import (  # noqa: E402
    assert_fits_without_loop_spills,
    compile_in_child,
    compile_launches,
    print_compiled_cases,
)

# sm_90: every dtype with both widths, soft targets taking turns, and BLIP's case (bf16, 256); sm_80: BLIP's.
CASES = [(90, dtype, d, i % 2 == 1) for i, (dtype, d) in enumerate(itertools.product(("fp32", "bf16", "fp16"),
                                                                                     (256, 257)))]
CASES += [(90, "bf16", 256, False), (80, "bf16", 256, False), (80, "fp32", 256, True)]


def _compile_case(capability, dtype, d, soft):
    import torch
    import triton as t
    from fastadapter.kernels import contrastive as k

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    block_d = max(16, t.next_power_of_2(d))
    common = dict(HAS_IDS=True, SOFT=soft, PRECISION=k.PRECISION, BLOCK_N=k.BLOCK_N, BLOCK_K=k.BLOCK_K)
    sides = dict(a_ptr=dtype, b_ptr=dtype, a_inv_ptr="fp32", b_inv_ptr="fp32", ids_a_ptr="i64", ids_b_ptr="i64",
                 sa_ptr=dtype, sb_ptr=dtype, sa_inv_ptr="fp32", sb_inv_ptr="fp32", inv_tau_ptr="fp32")
    sizes = dict(n_a="i32", n_b="i32", d="i32", soft_d="i32", alpha="fp32")
    launches = {
        "stats": (k._stats_kernel, dict(sides, loss_ptr="fp32", stats_ptr="fp32"), sizes,
                  dict(common, BLOCK_M=k.stats_block_m(torch_dtype, soft)), dict(num_warps=k.NUM_WARPS)),
        "grad": (k._grad_kernel, dict(sides, g_a_ptr="fp32", stats_a_ptr="fp32", g_b_ptr="fp32", stats_b_ptr="fp32",
                                      grad_ptr=dtype, r_ptr="fp32"), sizes,
                 dict(common, ROWS=True, COLS=True, WANT_GRAD=True, NORMALIZE=True, BLOCK_D=block_d,
                      BLOCK_M=k.grad_block_m(torch_dtype, block_d)), dict(num_warps=k.NUM_WARPS)),
    }
    return compile_launches(capability, launches)


@pytest.fixture(scope="module")
def compiled():
    return compile_in_child(__file__)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "sm{}-{}-d{}-{}".format(c[0], c[1], c[2],
                                                                               "soft" if c[3] else "hard"))
def test_contrastive_kernels_compile_for_the_gpu(compiled, case):
    assert_fits_without_loop_spills(compiled[case], case[0])


if __name__ == "__main__":  # the child: one JSON line per case
    print_compiled_cases(__file__, CASES, _compile_case)
