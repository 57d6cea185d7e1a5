"""fastadapter.itm_margin_loss and fastadapter.sample_hard_negatives on every CPU backend (triton through the
interpreter): the margin loss and both grads against float64 autograd through the eager reference (diagonal and
ids, odd N and d, tiles crossed, every reduction, with and without normalisation, fp16/bf16); the sampler never
returns a positive, its draws follow softmax(s / tau) over the negatives (chi-square), one seed gives one draw;
bad input; opcheck, torch.compile and autocast."""

import pytest
import torch
from itm_helpers import check_margin, check_never_positive, chi_square_p_value, itm_backends

import fastadapter
from fastadapter.ops.itm import reference

MARGIN = itm_backends("itm_margin_loss")
SAMPLER = itm_backends("sample_hard_negatives")
FAST = [b for b in MARGIN if b != "triton"]  # the interpreter is too slow for the large cases


@pytest.mark.parametrize("backend", MARGIN)
@pytest.mark.parametrize("n_image, n_text, d, ids", [(1, 1, 16, False), (2, 2, 16, False), (37, 37, 257, False),
                                                      (37, 37, 33, True), (19, 45, 16, True)])
def test_margin_matches_reference(backend, n_image, n_text, d, ids):
    check_margin(backend, n_image, n_text, d, ids)


@pytest.mark.parametrize("backend", MARGIN)
@pytest.mark.parametrize("reduction", ["paper", "mean", "sum"])
@pytest.mark.parametrize("normalize", [True, False])
def test_margin_reductions_and_raw_features(backend, reduction, normalize):
    check_margin(backend, 23, 23, 24, ids=True, reduction=reduction, normalize=normalize, margin=0.1)


@pytest.mark.parametrize("backend", FAST)
def test_margin_crosses_tiles(backend):
    """Past the cpu backend's 128-row blocks and 512-column tiles and the torch backend's 1024-row blocks."""
    check_margin(backend, 1100, 601, 40, ids=True)


@pytest.mark.parametrize("backend", MARGIN)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_margin_half_precision(backend, dtype):
    if backend == "triton" and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter cannot do bf16 arithmetic; tests/test_gpu.py runs this case")
    check_margin(backend, 29, 29, 48, ids=True, dtype=dtype)


def test_margin_paper_reduction_divides_by_both_counts():
    image, text = torch.randn(4, 8), torch.randn(6, 8)
    ids = dict(image_ids=torch.arange(4), text_ids=torch.tensor([0, 1, 2, 3, 0, 1]))
    total = fastadapter.itm_margin_loss(image, text, reduction="sum", **ids)
    torch.testing.assert_close(fastadapter.itm_margin_loss(image, text, **ids), total / 10)
    torch.testing.assert_close(fastadapter.itm_margin_loss(image, text, reduction="mean", **ids), total / 24)
    pairs = reference.pair_losses(image.double(), text.double(), **ids)
    torch.testing.assert_close(total.double(), pairs.sum(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", [*SAMPLER, "eager"])
@pytest.mark.parametrize("n_image, n_text, d, ids", [(2, 2, 8, False), (37, 37, 33, False), (45, 19, 16, True)])
def test_sampler_never_returns_a_positive(backend, n_image, n_text, d, ids):
    check_never_positive(backend, n_image, n_text, d, ids)


@pytest.mark.parametrize("backend", [b for b in SAMPLER if b != "triton"])
def test_sampler_crosses_tiles(backend):
    check_never_positive(backend, 1100, 700, 24, ids=True)


@pytest.mark.parametrize("backend", [*SAMPLER, "eager"])
def test_sampler_frequencies_follow_the_softmax_over_negatives(backend):
    """Fixed seed, 3000 draws; a sampler ignoring s (uniform) or tau, or including the positive, fails at once."""
    assert chi_square_p_value(backend) > 1e-3


@pytest.mark.parametrize("backend", [*SAMPLER, "eager"])
def test_sampler_same_seed_same_indices(backend):
    g = torch.Generator().manual_seed(9)
    image, text = torch.randn(50, 16, generator=g), torch.randn(50, 16, generator=g)

    def draw(seed):
        return fastadapter.sample_hard_negatives(image, text, 0.5, generator=torch.Generator().manual_seed(seed),
                                                 backend=backend)

    first, again, other = draw(1), draw(1), draw(2)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_sampler_follows_the_default_generator():
    image, text = torch.randn(30, 8), torch.randn(30, 8)
    torch.manual_seed(5)
    first = fastadapter.sample_hard_negatives(image, text, 0.1)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(first, fastadapter.sample_hard_negatives(image, text, 0.1)))


@pytest.mark.parametrize("backend", [*SAMPLER, "eager"])
def test_sampler_row_without_negative_is_an_error(backend):
    """Every sample sharing one image id: BLIP's torch.multinomial fails on the all-zero row."""
    image, text = torch.randn(3, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"image 0 \(id 0\) has no negative: every text shares its id"):
        fastadapter.sample_hard_negatives(image, text, 0.1, torch.zeros(3, dtype=torch.long),
                                          torch.zeros(4, dtype=torch.long), backend=backend)
    with pytest.raises(ValueError, match=r"text 3 \(id 1\) has no negative"):
        fastadapter.sample_hard_negatives(image, text, 0.1, torch.ones(3, dtype=torch.long),
                                          torch.tensor([0, 0, 0, 1]), backend=backend)


X, Y = torch.randn(6, 8), torch.randn(6, 8)


@pytest.mark.parametrize("call, error, match", [
    (lambda: fastadapter.itm_margin_loss(X, torch.randn(6, 9)), ValueError, "same feature width"),
    (lambda: fastadapter.itm_margin_loss(X, torch.randn(5, 8)), ValueError, "need the same count"),
    (lambda: fastadapter.itm_margin_loss(X, Y, margin=-0.1), ValueError, "margin must be a finite number >= 0"),
    (lambda: fastadapter.itm_margin_loss(X, Y, reduction="none"), ValueError, "unknown reduction"),
    (lambda: fastadapter.itm_margin_loss(X, Y, image_ids=torch.arange(6)), ValueError, "give both image_ids"),
    (lambda: fastadapter.itm_margin_loss(X, Y, image_ids=torch.arange(5), text_ids=torch.arange(6)), ValueError,
     r"image_ids must have shape \(6,\)"),
    (lambda: fastadapter.itm_margin_loss(X.double(), Y.double()), TypeError, "supported dtypes are float32"),
    (lambda: fastadapter.itm_margin_loss(X, Y.half()), TypeError, "dtype mismatch"),
    (lambda: fastadapter.itm_margin_loss(X, None), TypeError, "text_feat must be a torch.Tensor"),
    (lambda: fastadapter.itm_margin_loss(X.unsqueeze(0), Y.unsqueeze(0)), ValueError, r"must have shape \(n, d\)"),
    (lambda: fastadapter.sample_hard_negatives(X, Y, 0.0), ValueError, "positive and finite"),
    (lambda: fastadapter.sample_hard_negatives(X, Y, torch.tensor(-1.0)), ValueError, "positive and finite"),
    (lambda: fastadapter.sample_hard_negatives(X, torch.randn(6, 7), 0.1), ValueError, "same feature width"),
    (lambda: fastadapter.sample_hard_negatives(X[:1], Y[:1], 0.1), ValueError, "image 0 has no negative"),
    (lambda: fastadapter.sample_hard_negatives(X, Y, 0.1, backend="cuda"), fastadapter.BackendUnavailableError,
     "cuda"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_opcheck(backend):
    g = torch.Generator().manual_seed(2)
    image, text = torch.randn(7, 5, generator=g, requires_grad=True), torch.randn(9, 5, generator=g,
                                                                                 requires_grad=True)
    ids = (torch.arange(7) % 3, torch.arange(9) % 3)
    torch.library.opcheck(torch.ops.fastadapter.itm_margin_forward.default, (image, text, *ids, 0.2, True, backend))
    torch.library.opcheck(torch.ops.fastadapter.itm_margin_backward.default,
                          (torch.rand(7), image.detach(), text.detach(), *ids, 0.2, True, True, True, backend))
    torch.library.opcheck(torch.ops.fastadapter.hard_negatives.default,
                          (image.detach(), text.detach(), torch.tensor(0.1), *ids, 12345, backend))


@pytest.mark.parametrize("compile_backend", ["aot_eager", "inductor"])
def test_margin_compiles_fullgraph(compile_backend):
    g = torch.Generator().manual_seed(4)
    image, text = torch.randn(12, 16, generator=g, requires_grad=True), torch.randn(12, 16, generator=g)
    ids = torch.arange(12) // 2

    def step(image, text):
        return fastadapter.itm_margin_loss(image, text, image_ids=ids, text_ids=ids)

    loss = torch.compile(step, fullgraph=True, backend=compile_backend)(image, text)
    (grad,) = torch.autograd.grad(loss, image)
    expected = step(image, text)
    (expected_grad,) = torch.autograd.grad(expected, image)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_margin_autocast_runs_in_bfloat16_and_returns_float32():
    image = torch.randn(10, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fastadapter.itm_margin_loss(image, torch.randn(10, 16))
    assert loss.dtype == torch.float32
    loss.backward()
    assert image.grad is not None and image.grad.dtype == torch.float32


def test_sampler_takes_features_that_require_grad_and_gives_integers():
    image, text = torch.randn(8, 16, requires_grad=True), torch.randn(8, 16, requires_grad=True)
    texts, images = fastadapter.sample_hard_negatives(image, text, torch.tensor(0.07, requires_grad=True))
    assert not texts.requires_grad and texts.dtype == torch.int64
