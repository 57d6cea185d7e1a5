import importlib.util
import sys
from pathlib import Path

import torch

import fastadapter
from fastadapter.ops.adapter import reference

TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def benchmarks_module(name):
    """benchmarks/<name>.py imported as a module (benchmarks/ is a folder of scripts, not a package), with its
    folder on sys.path while it loads, as when run as a script, for its imports of its siblings."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def cpu_backends():
    """The adapter op's backends under its saved-for-backward contract that run on CPU tensors here (triton only
    through the interpreter); eager, the plain PyTorch adapter with autograd, is what they are checked against."""
    return [name for name, info in fastadapter.backends("adapter").items()
            if info.available and "cpu" in info.devices and name != "eager"]


def make_inputs(tokens, width, r, dtype=torch.float32, lead=(), biases=True, scale=1.0):
    """Fresh random adapter inputs in float64: x, w_down, b_down, norm_weight, norm_bias, w_up, b_up."""
    f64 = dict(dtype=torch.float64)
    x = torch.randn(*lead, tokens, width, **f64) * scale
    params = [torch.randn(r, width, **f64) / width ** 0.5, torch.randn(r, **f64) * 0.1 if biases else None,
              1 + 0.1 * torch.randn(r, **f64), 0.1 * torch.randn(r, **f64) if biases else None,
              torch.randn(width, r, **f64) / r ** 0.5, torch.randn(width, **f64) * 0.1 if biases else None]
    return [x, *params]


def cast(tensors, dtype, requires_grad=True, device="cpu"):
    return [None if t is None else t.detach().to(device, dtype).requires_grad_(requires_grad) for t in tensors]


def reference_outputs(inputs64, grad_y, activation="gelu", norm="layernorm"):
    """y and the gradient of every input, by autograd through the float64 reference."""
    leaves = cast(inputs64, torch.float64)
    y = reference.adapter(*leaves, activation=activation, norm=norm)
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(y, present, grad_y.to(torch.float64)))
    return y.detach(), [None if t is None else next(grads) for t in leaves]


def assert_close(actual, expected, tol, what, floor=1e-6):
    """Normwise relative error: max|actual - expected| <= tol * max|expected|. Inputs are unit scale, so a
    magnitude under 1e-6 only arises where the exact value is zero (e.g. LayerNorm over r=1 features):
    there the float64 reference is rounding noise, and the bound uses 1e-6 instead (`floor`: a caller whose
    values have a known natural scale passes that)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.double() - expected).abs().max().item() if expected.numel() else 0.0
    scale = expected.abs().max().item() if expected.numel() else 0.0
    assert err <= tol * max(scale, floor), f"{what}: error {err:.3e} > {tol:.0e} x {max(scale, floor):.3e}"


NAMES = ("x", "w_down", "b_down", "norm_weight", "norm_bias", "w_up", "b_up")


def assert_matches_reference(y, leaves, inputs64, grad_y, dtype, activation="gelu", norm="layernorm"):
    """y = fastadapter.adapter(*leaves) and its gradient for every leaf present, against float64 autograd
    through the reference on inputs64, with grad_y (float64) flowing back."""
    y_ref, grads_ref = reference_outputs(inputs64, grad_y, activation, norm)
    present = [t for t in leaves if t is not None]
    grads = iter(torch.autograd.grad(y, present, grad_y.to(y.device, dtype)))
    tol = TOLERANCE[dtype]
    assert_close(y.cpu(), y_ref, tol, "y")
    for name, leaf, expected in zip(NAMES, leaves, grads_ref):
        if leaf is not None:
            assert_close(next(grads).cpu(), expected, tol, f"grad {name}")


def check_against_reference(backend, inputs64, dtype, activation="gelu", norm="layernorm", recompute=False,
                            device="cpu"):
    """y and every gradient of fastadapter.adapter against float64 autograd through the reference. The reference
    runs on the inputs (and grad_y) as rounded to `dtype`, upcast: what is compared is the op's arithmetic,
    not the rounding of its inputs."""
    inputs64 = [None if t is None else t.to(dtype).double() for t in inputs64]
    grad_y = torch.randn_like(inputs64[0]).to(dtype).double()
    leaves = cast(inputs64, dtype, device=device)
    y = fastadapter.adapter(*leaves, activation=activation, norm=norm, backend=backend, recompute=recompute)
    assert y.dtype == dtype and y.device == leaves[0].device
    assert_matches_reference(y, leaves, inputs64, grad_y, dtype, activation, norm)


def check_strided_parameters(backend, device="cpu"):
    """Every parameter a strided view (e.g. a slice of a larger weight): values and grads as with dense ones."""
    dense = cast(make_inputs(7, 32, 8), torch.float32, device=device)
    strided = []
    for t in dense[1:]:
        wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], device=device)
        wide[..., ::2] = t.detach()
        strided.append(wide[..., ::2].requires_grad_())
    assert not any(t.is_contiguous() for t in strided)
    grad = torch.randn(7, 32, device=device)
    got = fastadapter.adapter(dense[0], *strided, backend=backend)
    expected = reference.adapter(*dense)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got_grads = torch.autograd.grad(got, strided, grad)
    expected_grads = torch.autograd.grad(expected, dense[1:], grad)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def check_autocast(backend, dtype, x_dtype=torch.float32, device="cpu"):
    """Under torch.autocast the op runs on its inputs cast to the autocast dtype, as F.linear does: bit for bit
    the values of an explicit cast, and the float32 parameters get float32 grads through the casts."""
    leaves = cast(make_inputs(19, 64, 24, lead=(2,)), torch.float32, device=device)
    leaves[0] = leaves[0].detach().to(x_dtype).requires_grad_()
    grad_y = torch.randn(2, 19, 64, device=device, dtype=dtype)
    with torch.autocast(device, dtype=dtype):
        y = fastadapter.adapter(*leaves, backend=backend)
    explicit = fastadapter.adapter(*[t.to(dtype) for t in leaves], backend=backend)
    assert y.dtype == dtype and torch.equal(y, explicit)
    grads = torch.autograd.grad(y, leaves, grad_y)
    expected = torch.autograd.grad(explicit, leaves, grad_y)
    for name, leaf, got, want in zip(NAMES, leaves, grads, expected):
        assert got.dtype == leaf.dtype and torch.equal(got, want), f"grad {name}"
