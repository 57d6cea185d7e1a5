"""The contrastive op as a PyTorch op and as an API: bad input gets a clear early error, opcheck passes for
forward and backward, torch.compile(fullgraph=True) traces it, autocast runs it, ITCLoss holds BLIP's clamped
learnable temperature."""

import math

import pytest
import torch
from helpers import assert_close

import fastadapter
from fastadapter.ops.contrastive import reference

X = torch.randn(6, 8)
Y = torch.randn(6, 8)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fastadapter.itc_loss(X, torch.randn(6, 9)), ValueError, "same feature width"),
    (lambda: fastadapter.itc_loss(X, torch.randn(5, 8)), ValueError, "without ids the positives are the diagonal"),
    (lambda: fastadapter.itc_loss(X, Y, image_ids=torch.arange(5), text_ids=torch.arange(6)), ValueError,
     r"image_ids must have shape \(6,\)"),
    (lambda: fastadapter.itc_loss(X, Y, image_ids=torch.arange(6), text_ids=torch.arange(6) + 1), ValueError,
     "image 0 .* has no positive"),
    (lambda: fastadapter.itc_loss(X, Y, image_ids=torch.zeros(6, dtype=torch.long),
                                  text_ids=torch.tensor([0, 0, 0, 0, 0, 4])), ValueError, "text 5 .* no positive"),
    (lambda: fastadapter.contrastive_loss(X, Y, query_ids=torch.arange(6), key_ids=torch.arange(6) * 2),
     ValueError, "query 1 .* no positive"),
    (lambda: fastadapter.itc_loss(X, Y, temperature=0.0), ValueError, "positive and finite"),
    (lambda: fastadapter.itc_loss(X, Y, temperature=math.inf), ValueError, "positive and finite"),
    (lambda: fastadapter.itc_loss(X, Y, temperature=torch.tensor(-0.1)), ValueError, "positive and finite"),
    (lambda: fastadapter.itc_loss(X, Y, temperature=torch.tensor([0.1])), ValueError, "0-d"),
    (lambda: fastadapter.itc_loss(X, Y, lambda_=1.5), ValueError, "lambda_ must be a number in"),
    (lambda: fastadapter.itc_loss(X, Y, alpha=-0.1), ValueError, "alpha must be a number in"),
    (lambda: fastadapter.itc_loss(X, Y, momentum_image_feat=X, momentum_text_feat=Y), ValueError,
     "soft features were given with alpha = 0"),
    (lambda: fastadapter.itc_loss(X, Y, alpha=0.4), ValueError, "alpha > 0 needs the soft features"),
    (lambda: fastadapter.itc_loss(X, Y, momentum_image_feat=X, momentum_text_feat=Y[:5], alpha=0.4), ValueError,
     "soft_query and soft_keys must have one row per query"),
    (lambda: fastadapter.itc_loss(X, Y, momentum_image_feat=X, alpha=0.4), ValueError, "give both soft features"),
    (lambda: fastadapter.itc_loss(X.long(), Y.long()), TypeError, "must be a floating-point tensor"),
    (lambda: fastadapter.itc_loss(X.double(), Y.double()), TypeError, "supported dtypes are float32"),
    (lambda: fastadapter.itc_loss(X, Y.half()), TypeError, "dtype mismatch"),
    (lambda: fastadapter.itc_loss(X, Y, reduction="max"), ValueError, "unknown reduction"),
    (lambda: fastadapter.itc_loss(X, None), TypeError, "text_feat must be a torch.Tensor"),
    (lambda: fastadapter.itc_loss(X, Y, backend="cuda"), fastadapter.BackendUnavailableError, "cuda"),
    (lambda: fastadapter.itc_loss(X.unsqueeze(0), Y.unsqueeze(0)), ValueError, r"must have shape \(n, d\)"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_eager_backend_takes_float64_and_is_the_reference():
    x, y = X.double(), Y.double()
    assert_close(fastadapter.itc_loss(x, y, backend="eager"), reference.itc_loss(x, y), 0, "eager")


def _op_args(rows=True, columns=True):
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(7, 5, generator=g), torch.randn(9, 5, generator=g)
    q.requires_grad_()
    k.requires_grad_()
    tau = torch.tensor(0.2, requires_grad=True)
    return (q, k, tau, torch.arange(7) % 3, torch.arange(9) % 3, None, None, 0.0, True, rows, columns)


@pytest.mark.parametrize("backend", ["cpu", "torch"])
@pytest.mark.parametrize("directions", [(True, True), (True, False), (False, True)])
def test_opcheck(backend, directions):
    args = _op_args(*directions)
    torch.library.opcheck(torch.ops.fastadapter.contrastive_forward.default, (*args, backend))
    q, k, tau = args[:3]
    out = torch.ops.fastadapter.contrastive_forward(*[a.detach() if isinstance(a, torch.Tensor) else a
                                                      for a in args], backend)
    grads = (torch.rand(7) if directions[0] else None, torch.rand(9) if directions[1] else None)
    torch.library.opcheck(torch.ops.fastadapter.contrastive_backward.default,
                          (*grads, q.detach(), k.detach(), tau.detach(), *args[3:9], out[2], out[3], True, True, True,
                           backend))


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_compile_fullgraph(compile_backend):
    g = torch.Generator().manual_seed(4)
    image, text = torch.randn(12, 16, generator=g, requires_grad=True), torch.randn(12, 16, generator=g)
    tau = torch.tensor(0.07, requires_grad=True)
    ids = torch.arange(12) // 2

    def step(image, text, tau):
        return fastadapter.itc_loss(image, text, tau, lambda_=0.3, image_ids=ids, text_ids=ids)

    compiled = torch.compile(step, fullgraph=True, backend=compile_backend)
    loss = compiled(image, text, tau)
    grads = torch.autograd.grad(loss, (image, tau))
    expected = step(image, text, tau)
    expected_grads = torch.autograd.grad(expected, (image, tau))
    assert_close(loss.detach(), expected.detach().double(), 1e-6, "compiled loss")
    for got, want in zip(grads, expected_grads):
        assert_close(got, want.double(), 1e-6, "compiled grad")


def test_autocast_runs_in_bfloat16_and_returns_float32():
    image = torch.randn(10, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fastadapter.itc_loss(image, torch.randn(10, 16))
    assert loss.dtype == torch.float32
    loss.backward()
    assert image.grad is not None and image.grad.dtype == torch.float32


def test_no_grad_inputs_and_keys_without_grad():
    q, k = torch.randn(5, 8, requires_grad=True), torch.randn(40, 8)
    loss = fastadapter.contrastive_loss(q, k, query_ids=torch.arange(5), key_ids=torch.arange(40) % 5)
    loss.backward()
    assert q.grad is not None and k.grad is None
    with torch.no_grad():
        assert fastadapter.itc_loss(X, Y).requires_grad is False


def test_itc_loss_module_clamps_its_temperature_in_place():
    module = fastadapter.ITCLoss()
    assert module.temperature.item() == pytest.approx(0.07)
    with torch.no_grad():
        module.temperature.fill_(5.0)
    image, text = torch.randn(8, 16), torch.randn(8, 16)
    loss = module(image, text)
    assert module.temperature.item() == pytest.approx(0.5)
    assert_close(loss.detach(), fastadapter.itc_loss(image, text, 0.5).double(), 1e-6, "module loss")
    loss.backward()
    assert module.temperature.grad is not None and module.temperature.grad.abs().item() > 0
