"""The contrastive losses: `contrastive_loss` (one direction, queries against keys) and `itc_loss` (BLIP's
image-text contrastive loss, both directions of one similarity matrix), fused and tiled: the N x N logits never
exist on any backend.

Where its pieces are:
- schema: csrc/contrastive/schema.cpp; input checks: csrc/contrastive/checks.cpp (also run by the fake kernel);
- autograd, autocast and the dispatch to a backend: csrc/contrastive/autograd.cpp;
- backends under one saved-for-backward contract (csrc/contrastive/contrastive.h): cpu (csrc/contrastive/cpu),
  cuda (csrc/contrastive/cuda), triton (kernels/contrastive.py), torch (torch_backend.py, whose docstring has the
  math); eager is reference.py;
- tests: tests/test_contrastive_*.py; benchmarks: benchmarks/test_contrastive.py, benchmarks/contrastive_*.py.

Value checks, which read tensors: a tensor temperature must be positive and finite, and with ids every query (and,
for itc_loss, every key) needs a positive. On CPU they always run; on a GPU they would cost a sync per step, so
they are skipped there, as under torch.compile (a query without a positive then gives a NaN loss).
"""

from __future__ import annotations

import torch

from ..pair_checks import check_ids, check_tensors, temperature_tensor
from ..registry import OpBackends, register
from . import reference, registration

TABLE = register(OpBackends(
    "contrastive_loss",
    implemented={"cpu": "C++ tiles, MKL GEMMs, online log-sum-exp", "triton": "Triton flash-style tiles",
                 "cuda": "CUDA tile kernels around cuBLAS GEMMs (4096-square tiles)",
                 "torch": "the op's tiled contract in plain PyTorch (torch_backend.py)",
                 "eager": "the materialised N x N loss with autograd (reference.py)"},
    # GPU order by design, not yet by measurement (benchmarks/gpu/run.sh measures both).
    auto={"cpu": ("cpu", "torch"), "cuda": ("triton", "cuda", "torch"), "other": ("torch",)}))
REDUCTIONS = ("mean", "sum", "none")


def _check_options(op, reduction, alpha, lambda_=None):
    if reduction not in REDUCTIONS:
        raise ValueError(f"fastadapter.{op}: unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    for name, value in (("alpha", alpha), ("lambda_", lambda_)):
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ValueError(f"fastadapter.{op}: {name} must be a number in [0, 1], got {value!r}")


def _check_positives(op, ids, other_ids, what, other):
    if ids is None or other_ids is None or ids.device.type != "cpu" or torch.compiler.is_compiling():
        return
    if ids.shape[0]:
        missing = ~torch.isin(ids, other_ids)
        if bool(missing.any()):
            index = int(missing.nonzero()[0, 0])
            raise ValueError(f"fastadapter.{op}: {what} {index} (id {int(ids[index])}) has no positive: no "
                             f"{other} has its id")


def _soft(soft):
    return None if soft is None else soft.detach()


def _reduce(losses, reduction):
    return losses.mean() if reduction == "mean" else losses.sum() if reduction == "sum" else losses


def contrastive_loss(query, keys, temperature=0.07, normalize=True, query_ids=None, key_ids=None, soft_query=None,
                     soft_keys=None, alpha=0.0, reduction="mean", backend="auto"):
    """Cross entropy of each query against the keys: logits <q_hat, k_hat> / temperature (L2-normalised inside
    when normalize, gradients through it), targets uniform over the query's positives (the diagonal without ids;
    every key with key_ids == query_ids[i] with them), mixed as alpha * softmax(<sq_hat, sk_hat> / temperature)
    + (1 - alpha) * hard when soft_query and soft_keys (momentum features, no grad) are given.

    query: (n_q, d); keys: (n_k, d), n_k >= n_q allowed with ids (a queue of past features); keys that do not
    require grad get none computed. temperature: a float or a 0-d tensor (its grad is computed when it requires
    one; none flows through the soft targets). reduction: "mean" over queries, "sum" or "none" (per query).
    backend: "auto" | "cpu" | "triton" | "torch" | "eager" (fastadapter.backends("contrastive_loss")).
    """
    op = "contrastive_loss"
    check_tensors(op, query=query, keys=keys)
    _check_options(op, reduction, alpha)
    backend = TABLE.resolve(backend, query.device)
    tau = temperature_tensor(op, temperature, query)
    check_ids(op, query_ids, query, "query_ids", "query")
    check_ids(op, key_ids, keys, "key_ids", "keys")
    _check_positives(op, query_ids, key_ids, "query", "key")
    if backend == "eager":
        tau = temperature if isinstance(temperature, torch.Tensor) else float(temperature)  # as a user writes it
        return reference.contrastive_loss(query, keys, tau, normalize, query_ids, key_ids, _soft(soft_query),
                                          _soft(soft_keys), alpha, reduction)
    rows = torch.ops.fastadapter.contrastive_forward(query, keys, tau, query_ids, key_ids, _soft(soft_query),
                                                     _soft(soft_keys), float(alpha), bool(normalize), True, False,
                                                     backend)[0]
    return _reduce(rows, reduction)


def itc_loss(image_feat, text_feat, temperature=0.07, lambda_=0.5, normalize=True, image_ids=None, text_ids=None,
             momentum_image_feat=None, momentum_text_feat=None, alpha=0.0, reduction="mean", backend="auto"):
    """BLIP's image-text contrastive loss: lambda_ * (image -> text) + (1 - lambda_) * (text -> image) over one
    similarity matrix, both directions from one tiled pass (row and column statistics). Targets as in
    contrastive_loss: captions of the same image (equal ids) are all positives; momentum features give the soft
    targets with weight alpha. Image and text counts may differ when ids are given.

    reduction "mean" averages each direction over its queries; "none" returns the pair (lambda_ * per-image
    losses, (1 - lambda_) * per-text losses), whose total is the "sum" reduction.
    """
    op = "itc_loss"
    check_tensors(op, image_feat=image_feat, text_feat=text_feat)
    _check_options(op, reduction, alpha, lambda_)
    backend = TABLE.resolve(backend, image_feat.device)
    tau = temperature_tensor(op, temperature, image_feat)
    check_ids(op, image_ids, image_feat, "image_ids", "image_feat")
    check_ids(op, text_ids, text_feat, "text_ids", "text_feat")
    _check_positives(op, image_ids, text_ids, "image", "text")
    _check_positives(op, text_ids, image_ids, "text", "image")
    soft_i, soft_t = _soft(momentum_image_feat), _soft(momentum_text_feat)
    if backend == "eager":
        tau = temperature if isinstance(temperature, torch.Tensor) else float(temperature)
        return reference.itc_loss(image_feat, text_feat, tau, lambda_, normalize, image_ids, text_ids, soft_i,
                                  soft_t, alpha, reduction)
    full = reduction == "none"
    rows, columns = full or lambda_ > 0, full or lambda_ < 1
    image_losses, text_losses, _, _ = torch.ops.fastadapter.contrastive_forward(
        image_feat, text_feat, tau, image_ids, text_ids, soft_i, soft_t, float(alpha), bool(normalize), rows, columns,
        backend)
    if full:
        return lambda_ * image_losses, (1 - lambda_) * text_losses
    loss = lambda_ * _reduce(image_losses, reduction) if rows else 0.0
    return loss + (1 - lambda_) * _reduce(text_losses, reduction) if columns else loss


__all__ = ["contrastive_loss", "itc_loss", "reference", "registration", "TABLE"]
