"""Shared by the contrastive tests: fresh float64 features, the fused call and its float64 reference, and the
comparison of the losses and of every gradient."""

import torch
from helpers import TOLERANCE, assert_close

import fastadapter
from fastadapter.ops.contrastive import reference


def contrastive_backends():
    """The contrastive op's backends under its saved-for-backward contract that run on CPU tensors here."""
    return [name for name, info in fastadapter.backends("contrastive_loss").items()
            if info.available and "cpu" in info.devices and name != "eager"]


def features(n, d, generator=None):
    return torch.randn(n, d, dtype=torch.float64, generator=generator)


def grads_of(out, leaves, generator):
    """d(sum of out * random weights) / d leaves: a fresh grad for every output element."""
    outs = out if isinstance(out, tuple) else (out,)
    weights = [torch.rand(o.shape, dtype=torch.float64, generator=generator) + 0.5 for o in outs]
    total = sum((o.double() * w).sum() for o, w in zip(outs, weights))
    wanted = [t for t in leaves if t.requires_grad]
    return list(outs), list(torch.autograd.grad(total, wanted))


def check_itc(backend, image, text, kw, dtype=torch.float32, keys_grad=True, tau=0.07, one_direction=False,
              device="cpu"):
    """The fused loss in `dtype` and its grads (features, temperature) against float64 autograd through the
    eager reference, on the same inputs and the same random output weights."""
    tol = TOLERANCE[dtype]
    results = []
    # The reference starts from the inputs as rounded to dtype: the comparison measures the kernels' arithmetic.
    image, text = image.to(dtype), text.to(dtype)
    kw = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}
    for which, cast in (("fused", dtype), ("reference", torch.float64)):
        where = device if which == "fused" else "cpu"
        leaves = [image.to(where, cast).requires_grad_(), text.to(where, cast).requires_grad_(keys_grad),
                  torch.tensor(tau, dtype=torch.float64, device=where).requires_grad_()]
        extra = {k: (v.to(where, cast) if v.is_floating_point() else v.to(where)) if isinstance(v, torch.Tensor)
                 else v for k, v in kw.items()}
        if one_direction:
            fn = fastadapter.contrastive_loss if which == "fused" else reference.contrastive_loss
        else:
            fn = fastadapter.itc_loss if which == "fused" else reference.itc_loss
        args = dict(extra, backend=backend) if which == "fused" else extra
        out = fn(leaves[0], leaves[1], leaves[2], **args)
        results.append(grads_of(out, leaves, torch.Generator().manual_seed(7)))
    (outs, grads), (ref_outs, ref_grads) = results
    for i, (o, r) in enumerate(zip(outs, ref_outs)):
        assert o.dtype == torch.float32, f"loss {i} is {o.dtype}, not float32"
        assert_close(o.detach().cpu(), r.detach(), tol, f"loss {i}")
    assert len(grads) == len(ref_grads)
    for name, g, r in zip(("query/image", "keys/text", "temperature")[:len(grads)] if keys_grad else
                          ("query/image", "temperature"), grads, ref_grads):
        assert g.dtype == (torch.float64 if name == "temperature" else dtype), f"grad {name} is {g.dtype}"
        # The grads' natural scale is 1/tau (d loss / d S is of order 1, dS/d feature and S itself scale with 1/tau):
        # a grad that is exactly zero (one pair: the loss is 0 whatever the inputs) is compared at that scale.
        assert_close(g.double().cpu(), r, tol, f"grad {name}", floor=1 / tau)


def itc_case(n_image, n_text, ids, lambda_, reduction, generator):
    """itc_loss keyword arguments for a case: ids (a few captions per image) when asked or when counts differ."""
    kw = dict(lambda_=lambda_, reduction=reduction)
    if ids or n_image != n_text:
        groups = max(1, min(n_image, n_text) // 3)
        image_ids = torch.randperm(n_image, generator=generator) % groups
        extra = torch.randint(0, groups, (max(0, n_text - groups),), generator=generator)
        kw.update(image_ids=image_ids, text_ids=torch.cat([torch.arange(groups), extra])[:n_text])
    return kw


def check_itc_on(device, backend, n_image, n_text, d, ids, dtype):
    g = torch.Generator().manual_seed(n_image + d)
    kw = itc_case(n_image, n_text, ids, 0.3, "mean", g)
    check_itc(backend, features(n_image, d, g), features(n_text, d, g), kw, dtype=dtype, device=device)


def check_queue_on(device, backend, n=33, bank=301, d=40):
    """BLIP's one-direction form: a batch against a longer bank of keys with no grad, soft targets included."""
    g = torch.Generator().manual_seed(5)
    ids = torch.arange(n)
    key_ids = torch.cat([ids, torch.randint(0, 3 * n, (bank - n,), generator=g)])
    kw = dict(query_ids=ids, key_ids=key_ids, soft_query=features(n, d, g), soft_keys=features(bank, d, g),
              alpha=0.4, reduction="none")
    check_itc(backend, features(n, d, g), features(bank, d, g), kw, keys_grad=False, one_direction=True,
              device=device)
