"""The triton backend's whole-adapter kernels (kernels/adapter_fused.py: one forward kernel, one backward row
kernel) under TRITON_INTERPRET=1, against the float64 reference with every gradient: the issue's grid of r, T and
D in float32 and float16, every activation and norm, recompute, no input grad, and the two-kernel path above
MAX_R. (bf16 arithmetic fails in the interpreter; tests/test_gpu.py runs bf16 on a GPU.)"""

import pytest
import torch
from helpers import assert_close, assert_matches_reference, cast, check_against_reference, make_inputs

import fastadapter
from fastadapter.ops.adapter import reference

pytestmark = pytest.mark.skipif("triton" not in [n for n, i in fastadapter.backends("adapter").items()
                                                  if i.available and "cpu" in i.devices],
                                reason="the triton backend runs on CPU only under TRITON_INTERPRET=1")
adapter_fused = pytest.importorskip("fastadapter.kernels.adapter_fused")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("width", [64, 96])
@pytest.mark.parametrize("tokens", [0, 1, 37])
@pytest.mark.parametrize("r", [1, 48, 100, 256])
def test_grid(r, tokens, width, dtype):
    check_against_reference("triton", make_inputs(tokens, width, r), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("activation", reference.ACTIVATIONS)
@pytest.mark.parametrize("norm", reference.NORMS)
def test_activations_and_norms(activation, norm, dtype):
    check_against_reference("triton", make_inputs(37, 96, 100, lead=(2,)), dtype, activation, norm)


@pytest.mark.parametrize("biases", [True, False])
def test_recompute_and_no_biases(biases):
    check_against_reference("triton", make_inputs(37, 64, 48, biases=biases), torch.float32, recompute=True)
    check_against_reference("triton", make_inputs(37, 64, 48, biases=biases), torch.float16, recompute=True)


def test_no_input_gradient():
    """x that needs no gradient: the row kernel skips gx; the parameters' grads are as with it."""
    x64, *params64 = make_inputs(37, 64, 48)
    grad_y = torch.randn(37, 64, dtype=torch.float64).float().double()
    params, params_ref = cast(params64, torch.float32), cast(params64, torch.float64)
    y = fastadapter.adapter(x64.float(), *params, backend="triton")
    expected = reference.adapter(x64.float().double(), *params_ref)
    got = torch.autograd.grad(y, [p for p in params if p is not None], grad_y.float())
    want = torch.autograd.grad(expected, [p for p in params_ref if p is not None], grad_y)
    for g, e in zip(got, want):
        assert_close(g, e, 1e-5, "parameter grad")


def test_above_max_r_takes_the_two_kernel_path(monkeypatch):
    calls = []
    monkeypatch.setattr(adapter_fused, "forward", lambda *a: calls.append("fused") or None)
    check_against_reference("triton", make_inputs(5, 64, adapter_fused.MAX_R + 1), torch.float32)
    assert calls == []
    assert not adapter_fused.fits(torch.empty(1, 64), torch.empty(adapter_fused.MAX_R + 1, 64))
    assert adapter_fused.fits(torch.empty(1, 64), torch.empty(adapter_fused.MAX_R, 64))


def test_every_gradient_in_one_call_matches():
    inputs64 = make_inputs(37, 96, 256, lead=(3,))
    grad_y = torch.randn(3, 37, 96, dtype=torch.float64)
    leaves = cast(inputs64, torch.float32)
    assert_matches_reference(fastadapter.adapter(*leaves, backend="triton"), leaves, inputs64, grad_y,
                             torch.float32)


@pytest.mark.parametrize("rows", [1, 150])  # 150: the kernel's row chunks cross (CHUNK = 64)
def test_column_sums_finish_every_grad(rows):
    """The backward's parameter sums (kernels/column_sums.py) against float64, into each grad's dtype; the same
    partial sums give the same bits twice (a fixed order)."""
    column_sums = pytest.importorskip("fastadapter.kernels.column_sums")
    r, width = 5, 71  # 86 columns: the last of three programs is partly masked
    partial = torch.randn(rows, 3 * r + width)
    expected = partial.double().sum(0)

    def finish():
        grads = [torch.empty(r, dtype=torch.float16), torch.empty(r), torch.empty(r), torch.empty(width)]
        column_sums.finish(partial, r, *grads)
        return grads

    first, second = finish(), finish()
    for got, again, want in zip(first, second, expected.split([r, r, r, width])):
        assert_close(got.double(), want, 1e-3 if got.dtype == torch.float16 else 1e-6, "column sum")
        assert torch.equal(got, again)
    with pytest.raises(ValueError, match="partial sums of shape"):
        column_sums.finish(partial[:, 1:], r, *first)
