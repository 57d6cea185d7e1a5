"""The ITM ops' and the LM loss's Triton kernels compiled for sm_80 and sm_90 without a GPU (the method and its
reasons: tests/test_triton_compile.py): for every dtype at BLIP's width (256) and an odd one (257), each kernel
must fit the device's shared memory and keep its registers: no local-memory instruction inside its loops. Values
are checked on a GPU by tests/test_gpu.py."""

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

CASES = [(90, dtype, d) for dtype, d in itertools.product(("fp32", "bf16", "fp16"), (256, 257))]
CASES += [(80, "bf16", 256), (80, "fp32", 256)]


def _compile_case(capability, dtype, d):
    import torch
    import triton as t
    from fastadapter.kernels import contrastive, itm, lm_loss

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    block_d = max(16, t.next_power_of_2(d))
    common = dict(HAS_IDS=True, PRECISION=contrastive.PRECISION, BLOCK_N=contrastive.BLOCK_N,
                  BLOCK_K=contrastive.BLOCK_K)
    sides = dict(a_ptr=dtype, b_ptr=dtype, ids_a_ptr="i64", ids_b_ptr="i64")
    sizes = dict(n_a="i32", n_b="i32", d="i32")
    warps = dict(num_warps=contrastive.NUM_WARPS)
    launches = {
        "margin_rows": (itm._margin_rows_kernel, dict(sides, a_inv_ptr="fp32", b_inv_ptr="fp32", loss_ptr="fp32"),
                        dict(sizes, margin="fp32"), dict(common, BLOCK_M=itm.margin_rows_launch(torch_dtype)[0]),
                        dict(num_warps=itm.margin_rows_launch(torch_dtype)[1])),
        "margin_grad": (itm._margin_grad_kernel, dict(sides, a_inv_ptr="fp32", b_inv_ptr="fp32", w_ptr="fp32",
                                                      grad_ptr=dtype), dict(sizes, margin="fp32"),
                        dict(common, W_ON_ROWS=True, NORMALIZE=True, BLOCK_D=block_d,
                             BLOCK_M=contrastive.grad_block_m(torch_dtype, block_d)), warps),
        "negatives": (itm._negatives_kernel, dict(sides, ones_ptr="fp32", inv_tau_ptr="fp32", index_ptr="i64"),
                      dict(sizes, seed="i64"), dict(common, BLOCK_M=contrastive.BLOCK_M), warps),
        "cross_entropy": (lm_loss._cross_entropy_kernel, dict(z_ptr="fp32", labels_ptr="i64", lse_ptr="fp32",
                                                              loss_ptr="fp32", scale_ptr="fp32"),
                          dict(stride="i32", scale_stride="i32", vocab="i32", eps="fp32", ignore_index="i32"),
                          dict(HAS_LSE=False, WRITE_GRAD=True, BLOCK_V=lm_loss.BLOCK_V),
                          dict(num_warps=lm_loss.NUM_WARPS)),
    }
    return compile_launches(capability, launches)


@pytest.fixture(scope="module")
def compiled():
    return compile_in_child(__file__)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "sm{}-{}-d{}".format(*c))
def test_loss_kernels_compile_for_the_gpu(compiled, case):
    assert_fits_without_loop_spills(compiled[case], case[0])


if __name__ == "__main__":  # the child: one JSON line per case
    print_compiled_cases(__file__, CASES, _compile_case)
