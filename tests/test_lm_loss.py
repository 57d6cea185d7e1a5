"""fastadapter.lm_loss (the LM head fused with cross entropy) on every CPU backend against
F.cross_entropy(F.linear(...)) in float64: the loss and every gradient, every reduction, label smoothing, ignored
tokens (some, and all), a frozen head, bf16, chunks crossed; bad input; opcheck and torch.compile."""

import pytest
import torch
import torch.nn.functional as F
from helpers import TOLERANCE, assert_close

import fastadapter
from fastadapter.ops.lm_loss import torch_backend

BACKENDS = [name for name, info in fastadapter.backends("lm_loss").items()
            if info.available and "cpu" in info.devices and name != "eager"]


@pytest.fixture(autouse=True)
def small_torch_chunks(monkeypatch):
    monkeypatch.setattr(torch_backend, "CHUNK_ELEMENTS", 4096)  # cross chunk edges on small inputs


def _inputs(tokens, width, vocab, seed, ignore_every=5):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(tokens, width, dtype=torch.float64, generator=g)
    weight = torch.randn(vocab, width, dtype=torch.float64, generator=g) / width ** 0.5
    bias = torch.randn(vocab, dtype=torch.float64, generator=g) * 0.1
    labels = torch.randint(0, vocab, (tokens,), generator=g)
    if ignore_every:
        labels[::ignore_every] = -100
    return hidden, weight, bias, labels


def _check(backend, hidden, weight, bias, labels, eps, reduction, dtype=torch.float32, head_grad=True):
    g = torch.Generator().manual_seed(1)
    tensors = [t.to(dtype) if t is not None else None for t in (hidden, weight, bias)]
    results = []
    for fused in (True, False):
        leaves = [t.detach().to(dtype if fused else torch.float64) if t is not None else None for t in tensors]
        leaves[0].requires_grad_()
        for t in leaves[1:]:
            if t is not None:
                t.requires_grad_(head_grad)
        if fused:
            out = fastadapter.lm_loss(*leaves, labels, eps, reduction=reduction, backend=backend)
        else:
            out = F.cross_entropy(F.linear(*leaves), labels, label_smoothing=eps, reduction=reduction)
        weights = torch.rand(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) + 0.5
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        results.append((out, torch.autograd.grad((out.double() * weights).sum(), wanted)))
    (out, grads), (ref, ref_grads) = results
    assert out.dtype == torch.float32
    tol = TOLERANCE[dtype]
    assert_close(out.detach(), ref.detach(), tol, "loss", floor=1.0)
    assert len(grads) == len(ref_grads) == (3 if head_grad and bias is not None else 2 if head_grad else 1)
    for name, got, want in zip(("hidden", "weight", "bias"), grads, ref_grads):
        assert got.dtype == dtype, f"grad {name} is {got.dtype}"
        assert_close(got.double(), want, tol, f"grad {name}", floor=1e-3)
    del g


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_matches_cross_entropy(backend, reduction, eps):
    _check(backend, *_inputs(37, 24, 301, seed=3), eps, reduction)


@pytest.mark.parametrize("backend", BACKENDS)
def test_chunks_crossed_frozen_head_no_bias(backend):
    """A vocabulary that is not a multiple of anything, tokens over two of the cpu backend's chunks."""
    vocab = 20011
    tokens = fastadapter._C.lm_loss_chunk_rows(vocab) + 31
    hidden, weight, _, labels = _inputs(tokens, 8, vocab, seed=4)
    _check(backend, hidden, weight, None, labels, 0.1, "mean", head_grad=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_every_token_ignored(backend, reduction):
    hidden, weight, bias, _ = _inputs(9, 8, 17, seed=5)
    labels = torch.full((9,), -100)
    h = hidden.float().requires_grad_()
    out = fastadapter.lm_loss(h, weight.float(), bias.float(), labels, 0.1, reduction=reduction, backend=backend)
    ref = F.cross_entropy(F.linear(hidden, weight, bias), labels, label_smoothing=0.1, reduction=reduction)
    torch.testing.assert_close(out.double(), ref, equal_nan=True)  # mean: NaN (0/0), as F.cross_entropy
    (grad,) = torch.autograd.grad(out.sum(), h)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bfloat16_accumulates_in_float32(backend):
    _check(backend, *_inputs(40, 32, 513, seed=6), 0.1, "mean", dtype=torch.bfloat16)


def test_frozen_head_computes_no_weight_gradient(monkeypatch):
    hidden, weight, bias, labels = (t.float() if t.is_floating_point() else t for t in _inputs(20, 8, 50, seed=7))
    calls = []
    real = torch.ops.fastadapter.lm_loss_forward

    class Spy:
        def __call__(self, *args):
            calls.append(args[7:10])
            return real(*args)

    monkeypatch.setattr(torch.ops.fastadapter, "lm_loss_forward", Spy())
    fastadapter.lm_loss(hidden.requires_grad_(), weight, bias, labels).backward()
    with torch.no_grad():
        fastadapter.lm_loss(hidden, weight, bias, labels)
    assert calls == [(True, False, False), (False, False, False)]  # nothing computed for what needs no grad


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gradient_the_forward_did_not_compute_is_recomputed(backend):
    """Flags are a plan: a direct call that computes none still gets every gradient right, by recompute."""
    hidden, weight, bias, labels = _inputs(30, 8, 41, seed=10)
    leaves = [t.float().requires_grad_() for t in (hidden, weight, bias)]
    loss = torch.ops.fastadapter.lm_loss_forward(*leaves, labels, 0.1, -100, "mean", False, False, False, backend)[0]
    grads = torch.autograd.grad(loss, leaves)
    ref_leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    ref = F.cross_entropy(F.linear(*ref_leaves), labels, label_smoothing=0.1)
    for got, want in zip(grads, torch.autograd.grad(ref, ref_leaves)):
        assert_close(got.double(), want, 1e-5, "recomputed grad", floor=1e-3)


H, W, L = torch.randn(6, 8), torch.randn(11, 8), torch.arange(6)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fastadapter.lm_loss(H, torch.randn(11, 9), None, L), ValueError, "same H"),
    (lambda: fastadapter.lm_loss(H, W, torch.randn(10), L), ValueError, r"bias must have shape \(11,\)"),
    (lambda: fastadapter.lm_loss(H, W, None, torch.arange(5)), ValueError, "leading shape"),
    (lambda: fastadapter.lm_loss(H, W, None, torch.tensor([0, 1, 2, 11, 4, 5])), ValueError,
     "label 11 at token 3 is outside the vocabulary"),
    (lambda: fastadapter.lm_loss(H, W, None, torch.tensor([0, 1, -1, 3, 4, 5])), ValueError, "label -1"),
    (lambda: fastadapter.lm_loss(H, W, None, L, label_smoothing=1.0), ValueError, r"label_smoothing must be in"),
    (lambda: fastadapter.lm_loss(H, W, None, L, reduction="max"), ValueError, "unknown reduction"),
    (lambda: fastadapter.lm_loss(H, W.half(), None, L), TypeError, "dtype mismatch"),
    (lambda: fastadapter.lm_loss(H, W, None, L.int()), TypeError, "labels must be int64"),
    (lambda: fastadapter.lm_loss(H.double(), W.double(), None, L), TypeError, "supported dtypes"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_opcheck(backend, reduction):
    hidden, weight, bias, labels = (t.float() if t.is_floating_point() else t for t in _inputs(12, 8, 40, seed=8))
    args = (hidden.requires_grad_(), weight, bias, labels, 0.1, -100, reduction, True, True, True, backend)
    torch.library.opcheck(torch.ops.fastadapter.lm_loss_forward.default, args)
    lse = torch.ops.fastadapter.lm_loss_forward(hidden.detach(), *args[1:])[1]
    torch.library.opcheck(torch.ops.fastadapter.lm_loss_backward.default,
                          (torch.rand(12), hidden.detach(), weight, bias, labels, lse, 0.1, -100, True, True, True,
                           backend))


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile_fullgraph(reduction):
    hidden, weight, bias, labels = (t.float() if t.is_floating_point() else t for t in _inputs(12, 8, 40, seed=9))
    hidden.requires_grad_()

    def loss(h):
        return fastadapter.lm_loss(h, weight, bias, labels, 0.1, reduction=reduction).sum()

    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    got, expected = compiled(hidden), loss(hidden)
    assert_close(got.detach(), expected.detach().double(), 1e-6, "compiled loss")
    assert_close(torch.autograd.grad(got, hidden)[0], torch.autograd.grad(expected, hidden)[0].double(), 1e-6,
                 "compiled grad")


def test_autocast_casts_to_bfloat16_and_returns_float32():
    h = torch.randn(10, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fastadapter.lm_loss(h, torch.randn(30, 16), None, torch.randint(0, 30, (10,)))
    assert loss.dtype == torch.float32
    loss.backward()
    assert h.grad.dtype == torch.float32
