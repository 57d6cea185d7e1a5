"""Every bad input gets a clear error naming the problem, raised before any work."""

import re

import pytest
import torch
from helpers import cast, make_inputs

import fastadapter
from fastadapter.ops import adapter as adapter_op
from fastadapter.ops import registry
from fastadapter.ops.registry import BackendInfo, BackendUnavailableError


def inputs(dtype=torch.float32):
    return cast(make_inputs(5, 32, 8), dtype, requires_grad=False)


def call(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, **kw):
    return fastadapter.adapter(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, **kw)


@pytest.mark.parametrize("index,bad,message", [
    (0, torch.randn(5, 31), r"w_down must have shape \(r, D=31\)"),
    (1, torch.randn(8, 33), r"w_down must have shape \(r, D=32\)"),
    (2, torch.randn(9), r"b_down must have shape \(8,\)"),
    (3, torch.randn(7), r"norm_weight must have shape \(8,\)"),
    (4, torch.randn(8, 1), r"norm_bias must have shape \(8,\)"),
    (5, torch.randn(8, 32), r"w_up must have shape \(32, 8\)"),
    (6, torch.randn(31), r"b_up must have shape \(32,\)"),
])
def test_mismatched_shapes(index, bad, message):
    args = inputs()
    args[index] = bad
    with pytest.raises(ValueError, match=message):
        call(*args)


def test_mismatched_dtype():
    args = inputs()
    args[5] = args[5].to(torch.bfloat16)
    with pytest.raises(TypeError, match="dtype mismatch: x is torch.float32 but w_up is torch.bfloat16"):
        call(*args)


def test_float64_is_refused_with_a_pointer():
    with pytest.raises(TypeError, match="supported dtypes are float32, bfloat16 and float16"):
        call(*inputs(torch.float64))


def test_non_floating_input():
    args = inputs()
    args[0] = torch.ones(5, 32, dtype=torch.int64)
    with pytest.raises(TypeError, match="x must be a floating-point tensor, got torch.int64"):
        call(*args)


@pytest.mark.parametrize("index,name", [(0, "x"), (5, "w_up")])
def test_sparse_input(index, name):
    args = inputs()
    args[index] = args[index].to_sparse()
    with pytest.raises(ValueError, match=fr"{name} must be a dense \(strided\) tensor, got layout Sparse"):
        call(*args)


def test_mismatched_device():
    args = inputs()
    args[1] = args[1].to("meta")
    with pytest.raises(ValueError, match="device mismatch: x is on cpu but w_down is on meta"):
        call(*args)


def test_zero_bottleneck():
    args = cast(make_inputs(5, 32, 1), torch.float32, requires_grad=False)
    args[1], args[2], args[3], args[4], args[5] = (torch.empty(0, 32), torch.empty(0), torch.empty(0), torch.empty(0),
                                                   torch.empty(32, 0))
    with pytest.raises(ValueError, match="bottleneck size must be at least 1"):
        call(*args)
    with pytest.raises(ValueError, match="bottleneck must be a positive integer"):
        fastadapter.AdapterConfig(bottleneck=0)


def test_unknown_activation_and_norm():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        call(*inputs(), activation="swish")
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'"):
        call(*inputs(), norm="batchnorm")
    with pytest.raises(ValueError, match="unknown activation"):
        fastadapter.AdapterConfig(activation="tanh")
    with pytest.raises(ValueError, match="unknown norm"):
        fastadapter.AdapterConfig(norm="groupnorm")


def test_the_backward_checks_what_it_is_given():
    """adapter_backward, called directly with saved tensors that break the contract, names what is wrong."""
    x, w_down, b_down, norm_weight, norm_bias, w_up, b_up = inputs()
    y, h, mean, rstd = torch.ops.fastadapter.adapter_forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up,
                                                             "gelu", "layernorm", 1e-5, False, "cpu")
    rest = (w_down, b_down, norm_weight, norm_bias, w_up)
    with pytest.raises(ValueError, match="mean and rstd must be float32 with one entry per row of h"):
        torch.ops.fastadapter.adapter_backward(y, x, h, mean[:3], rstd, *rest, "gelu", "layernorm", 1e-5, False,
                                               True, "cpu")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        torch.ops.fastadapter.adapter_backward(y, x, h, mean, rstd, *rest, "swish", "layernorm", 1e-5, False,
                                               True, "cpu")


def test_a_missing_required_tensor_is_named():
    x, w_down, b_down, norm_weight, norm_bias, w_up, b_up = inputs()
    for backend in ("auto", "eager"):
        with pytest.raises(TypeError, match="norm_weight must be a torch.Tensor, got None"):
            call(x, w_down, b_down, None, None, w_up, b_up, backend=backend)
        with pytest.raises(TypeError, match="w_up must be a torch.Tensor, got None"):
            call(x, w_down, b_down, norm_weight, norm_bias, None, b_up, backend=backend)


def test_eager_is_not_a_contract_backend():
    with pytest.raises(ValueError, match="no backend 'eager' implements the op's saved-for-backward contract"):
        torch.ops.fastadapter.adapter_forward(*inputs(), "gelu", "layernorm", 1e-5, True, "eager")


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_the_op_checks_its_own_inputs(backend):
    """Called directly, past the Python wrapper, the op names a bad argument before any work."""
    x, w_down, b_down, norm_weight, norm_bias, w_up, b_up = inputs()
    with pytest.raises(ValueError, match=r"b_up must have shape \(32,\) \(D=32, r=8\), got \(31,\)"):
        torch.ops.fastadapter.adapter_forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up[:31], "gelu",
                                              "layernorm", 1e-5, True, backend)
    with pytest.raises(TypeError, match="dtype mismatch: x is torch.float32 but norm_bias is torch.float16"):
        torch.ops.fastadapter.adapter_forward(x, w_down, b_down, norm_weight, norm_bias.half(), w_up, b_up, "gelu",
                                              "layernorm", 1e-5, True, backend)
    with pytest.raises(ValueError, match="eps must be positive, got nan"):
        torch.ops.fastadapter.adapter_forward(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up, "gelu",
                                              "layernorm", float("nan"), True, backend)


def test_x_must_be_a_tensor():
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        call([[1.0] * 32], *inputs()[1:])


@pytest.mark.parametrize("dynamic", [False, True])
def test_compiled_calls_are_checked_while_tracing(dynamic):
    """Under torch.compile the fake kernel runs the same checks, on symbolic sizes with dynamic=True."""
    torch._dynamo.reset()
    x, w_down, b_down, norm_weight, norm_bias, w_up, b_up = inputs()
    compiled = torch.compile(fastadapter.adapter, fullgraph=True, backend="aot_eager", dynamic=dynamic)
    torch.testing.assert_close(compiled(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up),
                               call(x, w_down, b_down, norm_weight, norm_bias, w_up, b_up))
    expected = r"\(s\d+, s\d+\) \(D=s\d+, r=s\d+\)" if dynamic else r"\(32, 8\) \(D=32, r=8\)"  # sizes as traced
    # Dynamo's wrapper for an error raised while tracing with fake tensors, before anything runs.
    with pytest.raises(torch._dynamo.exc.TorchRuntimeError, match="w_up must have shape " + expected):
        compiled(x, w_down, b_down, norm_weight, norm_bias, w_up[:, :7], b_up)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'tpu'"):
        call(*inputs(), backend="tpu")


def test_missing_backend_says_why(monkeypatch):
    if torch.cuda.is_available():  # a GPU machine has it: stand in a missing build
        missing = BackendInfo("cuda", False, (), "not built (test)")
        monkeypatch.setitem(registry._BUILT, "cuda", missing)
        monkeypatch.setitem(adapter_op.TABLE.info, "cuda", missing)
    info = fastadapter.backends()["cuda"]
    assert not info.available
    with pytest.raises(BackendUnavailableError, match=re.escape("backend 'cuda' is not available: " + info.reason)):
        call(*inputs(), backend="cuda")


def test_backend_on_the_wrong_device():
    with pytest.raises(BackendUnavailableError, match="does not run on meta tensors"):
        call(*[t.to("meta") for t in inputs()], backend="cpu")


def test_backends_report():
    report = fastadapter.backends()
    assert set(report) == {"cpu", "cuda", "triton", "torch", "eager"}
    assert report["cpu"].available and report["torch"].available and report["eager"].available
    assert all(info.reason for info in report.values())
    per_op = fastadapter.backends("adapter")
    assert set(per_op) == set(report) and per_op["cpu"].available == report["cpu"].available
    with pytest.raises(ValueError, match="unknown op 'attention'"):
        fastadapter.backends("attention")


def test_reference_is_the_deprecated_name_of_eager():
    args = inputs()
    with pytest.warns(DeprecationWarning, match="'reference' is now called 'eager'"):
        y = call(*args, backend="reference")
    assert torch.equal(y, call(*args, backend="eager"))
    with pytest.warns(DeprecationWarning, match="'reference' is now called 'eager'"):
        assert fastadapter.AdapterConfig(backend="reference").backend == "eager"
