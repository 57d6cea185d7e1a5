"""The LM loss: the language-model head (a linear layer to the vocabulary) fused with cross entropy, chunked over
tokens so that the (T, V) logits never exist.

Where its pieces are: schema csrc/lm_loss/schema.cpp; checks csrc/lm_loss/checks.cpp; autograd and autocast
csrc/lm_loss/autograd.cpp; backends under one contract (csrc/lm_loss/lm_loss.h): cpu (csrc/lm_loss/cpu), triton
(kernels/lm_loss.py), torch (torch_backend.py, whose docstring has the math); eager is reference.py.
Tests: tests/test_lm_loss.py.
"""

from __future__ import annotations

import torch

from ..registry import OpBackends, register
from . import reference, registration

TABLE = register(OpBackends(
    "lm_loss",
    implemented={"cpu": "chunked MKL GEMMs, C++ log-softmax and gradient pass",
                 "triton": "chunk GEMMs by cuBLAS, a Triton kernel for log-softmax, loss and gradient in place",
                 "torch": "the op's chunked contract in plain PyTorch (torch_backend.py)",
                 "eager": "F.cross_entropy on the full logits, with autograd (reference.py)"},
        # GPU order by design, not yet by measurement (benchmarks/gpu/run.sh measures both).
    auto={"cpu": ("cpu", "torch"), "cuda": ("triton", "torch"), "other": ("torch",)}))
REDUCTIONS = ("mean", "sum", "none")


def _check(hidden, weight, labels, label_smoothing, reduction):
    for name, value in (("hidden", hidden), ("weight", weight), ("labels", labels)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"fastadapter.lm_loss: {name} must be a torch.Tensor, got {type(value).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"fastadapter.lm_loss: unknown reduction {reduction!r}; expected one of {REDUCTIONS}")
    if not (isinstance(label_smoothing, (int, float)) and 0 <= label_smoothing < 1):
        raise ValueError(f"fastadapter.lm_loss: label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if hidden.shape[:-1] != labels.shape:
        raise ValueError(f"fastadapter.lm_loss: labels must have hidden's leading shape {tuple(hidden.shape[:-1])}, "
                         f"got {tuple(labels.shape)}")


def _check_label_values(labels, vocab, ignore_index):
    """Labels in [0, V) or ignore_index; read on CPU only (on a GPU the check would sync each step)."""
    if labels.device.type != "cpu" or torch.compiler.is_compiling() or labels.numel() == 0:
        return
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= vocab))
    if bool(bad.any()):
        index = int(bad.reshape(-1).nonzero()[0, 0])
        raise ValueError(f"fastadapter.lm_loss: label {int(labels.reshape(-1)[index])} at token {index} is outside "
                         f"the vocabulary [0, {vocab}) and is not ignore_index ({ignore_index})")


def lm_loss(hidden, weight, bias, labels, label_smoothing=0.0, ignore_index=-100, reduction="mean", backend="auto"):
    """F.cross_entropy(F.linear(hidden, weight, bias), labels, ...) without the (T, V) logits: chunked over tokens,
    float32 logits and accumulation whatever the input dtype, the loss in float32.

    hidden: (..., H); weight: (V, H); bias: (V,) or None; labels: hidden's leading shape, int64. The caller shifts
    the labels (labels[t] is the token after hidden[t]). hidden gets a gradient; weight and bias only when they
    require one (a frozen head costs no weight-gradient GEMM). reduction: "mean" over the tokens that are not
    ignore_index (all ignored: NaN, as F.cross_entropy), "sum", or "none" (per token, hidden's leading shape).
    With "mean"/"sum" the forward computes the gradients with the loss, so backward is a scaling.
    """
    _check(hidden, weight, labels, label_smoothing, reduction)
    backend = TABLE.resolve(backend, hidden.device)
    if backend == "eager":
        return reference.lm_loss(hidden.reshape(-1, hidden.shape[-1]), weight, bias, labels.reshape(-1),
                                 label_smoothing, ignore_index, reduction).reshape(
                                     labels.shape if reduction == "none" else ())
    _check_label_values(labels, weight.shape[0], ignore_index)
    flat = hidden.reshape(-1, hidden.shape[-1])
    grad = torch.is_grad_enabled()  # which gradients the forward computes with the loss ("mean"/"sum")
    flags = [grad and t is not None and t.requires_grad for t in (hidden, weight, bias)]
    loss = torch.ops.fastadapter.lm_loss_forward(flat, weight, bias, labels.reshape(-1), float(label_smoothing),
                                                 int(ignore_index), reduction, *flags, backend)[0]
    return loss.reshape(labels.shape) if reduction == "none" else loss


__all__ = ["lm_loss", "reference", "registration", "TABLE"]
