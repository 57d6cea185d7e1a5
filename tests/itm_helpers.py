"""Shared by the ITM tests (tests/test_itm.py, tests/test_gpu.py): fresh float64 features with ids, the fused
margin loss and its grads against float64 autograd through the eager reference, and the sampler's checks (never a
positive; frequencies against softmax(s / tau) over the negatives by a chi-square test)."""

import torch
from helpers import TOLERANCE, assert_close

import fastadapter
from fastadapter.ops.itm import reference


def itm_backends(op):
    """The op's backends that run on CPU tensors here (triton through the interpreter), eager excluded."""
    return [name for name, info in fastadapter.backends(op).items()
            if info.available and "cpu" in info.devices and name != "eager"]


def ids_for(n_image, n_text, generator):
    """A few captions per image: text ids cover every image id, so every image and text has a positive."""
    groups = max(1, min(n_image, n_text) // 3)
    image_ids = torch.randperm(n_image, generator=generator) % groups
    extra = torch.randint(0, groups, (max(0, n_text - groups),), generator=generator)
    return image_ids, torch.cat([torch.arange(groups), extra])[:n_text]


def check_margin(backend, n_image, n_text, d, ids=False, reduction="paper", normalize=True, margin=0.2,
                 dtype=torch.float32, device="cpu", seed=0):
    """The fused loss in dtype and both grads against float64 autograd through the reference on the same inputs
    (as rounded to dtype)."""
    g = torch.Generator().manual_seed(seed + 31 * n_image + d)
    image = torch.randn(n_image, d, dtype=torch.float64, generator=g).to(dtype)
    text = torch.randn(n_text, d, dtype=torch.float64, generator=g).to(dtype)
    if not normalize:
        image, text = image / d ** 0.5, text / d ** 0.5  # similarities of order 1 either way
    kw = dict(margin=margin, normalize=normalize, reduction=reduction)
    if ids or n_image != n_text:
        kw["image_ids"], kw["text_ids"] = ids_for(n_image, n_text, g)
    results = []
    for cast, where in ((dtype, device), (torch.float64, "cpu")):
        leaves = [image.to(where, cast).requires_grad_(), text.to(where, cast).requires_grad_()]
        extra = {k: v.to(where) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
        if cast == torch.float64:
            loss = reference.itm_margin_loss(*leaves, **extra)
        else:
            loss = fastadapter.itm_margin_loss(*leaves, **extra, backend=backend)
        results.append((loss, torch.autograd.grad(loss, leaves)))
    (loss, grads), (ref, ref_grads) = results
    tol = TOLERANCE[dtype]
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert_close(loss.detach().cpu(), ref.detach(), tol, "loss", floor=1.0)
    for name, got, want in zip(("image", "text"), grads, ref_grads):
        assert got.dtype == dtype, f"grad {name} is {got.dtype}"
        assert_close(got.double().cpu(), want, tol, f"grad {name}", floor=want.abs().max().item() or 1.0)


def sampler_case(n_image, n_text, d, generator, ids=True):
    image = torch.randn(n_image, d, generator=generator)
    text = torch.randn(n_text, d, generator=generator)
    image_ids, text_ids = ids_for(n_image, n_text, generator) if ids else (None, None)
    return image, text, image_ids, text_ids


def check_never_positive(backend, n_image, n_text, d, ids, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    image, text, image_ids, text_ids = sampler_case(n_image, n_text, d, g, ids)
    image_ids, text_ids = [None if t is None else t.to(device) for t in (image_ids, text_ids)]
    texts, images = fastadapter.sample_hard_negatives(
        image.to(device), text.to(device), 0.1, image_ids, text_ids, generator=torch.Generator().manual_seed(seed),
        backend=backend)
    image_ids, text_ids = [None if t is None else t.cpu() for t in (image_ids, text_ids)]
    assert texts.dtype == images.dtype == torch.int64
    assert texts.shape == (n_image,) and images.shape == (n_text,)
    texts, images = texts.cpu(), images.cpu()
    assert ((texts >= 0) & (texts < n_text)).all() and ((images >= 0) & (images < n_image)).all()
    if ids:
        assert (image_ids != text_ids[texts]).all(), "an image got a positive text"
        assert (text_ids != image_ids[images]).all(), "a text got a positive image"
    else:
        assert (texts != torch.arange(n_image)).all() and (images != torch.arange(n_text)).all()


def chi_square_p_value(backend, rows=3000, device="cpu", tau=0.5, seed=3, draw_seed=4):
    """Draws for `rows` copies of one image (id 0) against six texts (ids 0..5: text 0 is the positive); the
    copies differ only by their noise, so their draws are `rows` samples of one distribution, compared with
    softmax(s / tau) over texts 1..5 by Pearson's chi-square (p-value from the regularised gamma function). One
    more image (id 1) gives text 0 a negative."""
    g = torch.Generator().manual_seed(seed)
    one, other = torch.randn(1, 8, generator=g), torch.randn(1, 8, generator=g)
    text = torch.randn(6, 8, generator=g) * 0.25
    image = torch.cat([one.expand(rows, 8), other])
    image_ids = torch.cat([torch.zeros(rows, dtype=torch.long), torch.ones(1, dtype=torch.long)])
    texts, _ = fastadapter.sample_hard_negatives(image.to(device), text.to(device), tau, image_ids.to(device),
                                                 torch.arange(6, device=device),
                                                 generator=torch.Generator().manual_seed(draw_seed), backend=backend)
    drawn = texts[:rows].cpu()
    assert (drawn != 0).all()
    expected = torch.softmax((one.double() @ text[1:].double().t() / tau).squeeze(0), 0) * rows
    observed = torch.bincount(drawn - 1, minlength=5).double()
    statistic = ((observed - expected) ** 2 / expected).sum()
    assert expected.min() > 20, "the case must give every category enough expected draws"
    return torch.special.gammaincc(torch.tensor(2.0, dtype=torch.float64), statistic / 2).item()  # df = 4
