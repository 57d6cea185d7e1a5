"""BLIP's image-text matching (ITM) pieces, tiled: `itm_margin_loss` (the paper's eq. 8 in its margin form over
all pairs) and `sample_hard_negatives` (BLIP's hard-negative mining as a streaming Gumbel-max draw). Neither
builds the N x N similarities on any backend but eager.

Where their pieces are: schemas csrc/itm/schema.cpp; checks csrc/itm/checks.cpp; autograd and autocast
csrc/itm/autograd.cpp; backends under one contract (csrc/itm/itm.h): cpu (csrc/itm/cpu), cuda (csrc/itm/cuda),
triton (kernels/itm.py), torch (torch_backend.py, whose docstring has the math); eager is reference.py.
Tests: tests/test_itm.py.
"""

from __future__ import annotations

import torch

from ..pair_checks import check_ids, check_tensors, temperature_tensor
from ..registry import OpBackends, register
from . import reference, registration

_IMPLEMENTED = {"cpu": "C++ tiles, MKL GEMMs", "triton": "Triton tiles (tl.dot), one launch per side",
                "cuda": "CUDA tile kernels around cuBLAS GEMMs (4096-square tiles)",
                "torch": "the op's contract in plain PyTorch, in blocks of rows (torch_backend.py)"}
# GPU order by design, not yet by measurement (benchmarks/gpu/run.sh measures them).
_AUTO = {"cpu": ("cpu", "torch"), "cuda": ("triton", "cuda", "torch"), "other": ("torch",)}
MARGIN_TABLE = register(OpBackends("itm_margin_loss", {
    **_IMPLEMENTED, "eager": "the materialised N x N hinge terms with autograd (reference.py)"}, _AUTO))
NEGATIVES_TABLE = register(OpBackends("sample_hard_negatives", {
    **_IMPLEMENTED, "eager": "torch.multinomial over the masked N x N softmax, as BLIP (reference.py)"}, _AUTO))
REDUCTIONS = ("paper", "mean", "sum")


def _check_pair(op, image_feat, text_feat, image_ids, text_ids):
    check_tensors(op, image_feat=image_feat, text_feat=text_feat)
    check_ids(op, image_ids, image_feat, "image_ids", "image_feat")
    check_ids(op, text_ids, text_feat, "text_ids", "text_feat")


def itm_margin_loss(image_feat, text_feat, margin=0.2, normalize=True, image_ids=None, text_ids=None,
                    reduction="paper", backend="auto"):
    """The margin loss over all image-text pairs:

        L = sum_i sum_j [ y_ij (1 - s_ij) + (1 - y_ij) max(0, s_ij - margin) ]

    s_ij = <image_i, text_j> (on L2-normalised features when normalize, gradients through it); y_ij = 1 for
    positives: the diagonal, or equal ids (captions of one image). This is the paper's eq. 8 (§3) in its stated
    intent: as printed, eq. 8 takes the log of (1 - s) and of max(0, s - alpha), which is unbounded below (log 0),
    so it cannot be minimised; the margin form keeps its terms and drops the logs.

    reduction: "paper" divides by N_images + N_texts (2N, as the paper writes it), "mean" by the number of pairs,
    "sum" not at all. Tiled on every backend but eager: nothing N x N, backward recomputes the tiles.
    backend: "auto" | "cpu" | "cuda" | "triton" | "torch" | "eager" (fastadapter.backends("itm_margin_loss")).
    """
    op = "itm_margin_loss"
    _check_pair(op, image_feat, text_feat, image_ids, text_ids)
    if reduction not in REDUCTIONS:
        raise ValueError(f"fastadapter.{op}: unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < float("inf"):
        raise ValueError(f"fastadapter.{op}: margin must be a finite number >= 0, got {margin!r}")
    backend = MARGIN_TABLE.resolve(backend, image_feat.device)
    if backend == "eager":
        return reference.itm_margin_loss(image_feat, text_feat, margin, normalize, image_ids, text_ids, reduction)
    rows = torch.ops.fastadapter.itm_margin_forward(image_feat, text_feat, image_ids, text_ids, float(margin),
                                                    bool(normalize), backend)
    return rows.sum() / reference.divisor(image_feat.shape[0], text_feat.shape[0], reduction)


def sample_hard_negatives(image_feat, text_feat, temperature, image_ids=None, text_ids=None, generator=None,
                          backend="auto"):
    """BLIP's ITM hard negatives: for each image the index of a text, and for each text the index of an image,
    each drawn with probability proportional to exp(s_ij / temperature) over the pairs that are not positive
    (s_ij = <image_i, text_j>, the features as given; positives: the diagonal, or equal ids).

    Streaming: a Gumbel-max draw over tiles, O(N) memory. Reproducible: one integer seed is drawn from
    `generator` (torch's default CPU generator when None), so the same generator state gives the same indices
    on one backend; backends draw different numbers. Returns (text index per image, image index per text), int64.
    A row with no negative (every text shares the image's id) is an error, where BLIP's torch.multinomial fails on
    an all-zero row; with ids that check reads the result (on a GPU, one sync).
    """
    op = "sample_hard_negatives"
    _check_pair(op, image_feat, text_feat, image_ids, text_ids)
    if image_ids is None and image_feat.shape[0] == 1 == text_feat.shape[0]:
        raise ValueError(f"fastadapter.{op}: image 0 has no negative: there is one text and it is its positive")
    backend = NEGATIVES_TABLE.resolve(backend, image_feat.device)
    tau = temperature_tensor(op, temperature, image_feat)
    if backend == "eager":
        _check_has_negatives(op, image_ids, text_ids)
        return reference.sample_hard_negatives(image_feat, text_feat, temperature, image_ids, text_ids, generator)
    device = generator.device if generator is not None else "cpu"
    seed = int(torch.randint(0, 2 ** 62, (), generator=generator, device=device))
    texts, images = torch.ops.fastadapter.hard_negatives(image_feat.detach(), text_feat.detach(), tau.detach(),
                                                         image_ids, text_ids, seed, backend)
    if image_ids is not None and not torch.compiler.is_compiling():
        _check_drawn(op, texts, image_ids, "image", "text")
        _check_drawn(op, images, text_ids, "text", "image")
    return texts, images


def _check_drawn(op, index, ids, what, other):
    missing = index < 0
    if bool(missing.any()):
        row = int(missing.nonzero()[0, 0])
        raise ValueError(f"fastadapter.{op}: {what} {row} (id {int(ids[row])}) has no negative: every {other} shares "
                         f"its id")


def _check_has_negatives(op, image_ids, text_ids):
    """For the eager backend, before torch.multinomial meets an all-zero row."""
    if image_ids is None:
        return
    for ids, other_ids, what, other in ((image_ids, text_ids, "image", "text"), (text_ids, image_ids, "text", "image")):
        negatives = (ids[:, None] != other_ids[None, :]).any(1)
        _check_drawn(op, torch.where(negatives, 0, -1), ids, what, other)


__all__ = ["itm_margin_loss", "sample_hard_negatives", "reference", "registration", "MARGIN_TABLE",
           "NEGATIVES_TABLE"]
