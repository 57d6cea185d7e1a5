"""The LM loss op's triton backend (contract: csrc/lm_loss/lm_loss.h; math: fastadapter/ops/lm_loss/torch_backend.py).

Chunked over tokens like the other backends: a chunk's float32 logits z = h W^T + b come from one GEMM (cuBLAS
through torch, 16-bit operands with float32 output on the tensor cores), then `_cross_entropy_kernel`, a program
per token, makes one pass over the row for its log-sum-exp, loss and the sum of z (label smoothing) and, when the
gradient is wanted, a second pass that overwrites z in place with

    dz = scale_t * (softmax(z) - (1 - eps) onehot(y) - eps / V)      (0 for ignored tokens),

so the chunk's gradient costs no buffer beyond its logits; two more GEMMs take dz to hidden's (and the head's)
gradient. Against the torch backend this replaces ~5 full passes over the chunk (logsumexp, gather, mean, exp,
scatter, scale) with two.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from fastadapter.ops.lm_loss import torch_backend as chunked

BLOCK_V = 2048
NUM_WARPS = 8


@triton.jit
def _cross_entropy_kernel(z_ptr, stride, labels_ptr, lse_ptr, loss_ptr, scale_ptr, scale_stride, vocab, eps,
                          ignore_index, HAS_LSE: tl.constexpr, WRITE_GRAD: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0)
    z_row = z_ptr + row.to(tl.int64) * stride
    label = tl.load(labels_ptr + row)
    valid = label != ignore_index
    if HAS_LSE:
        lse = tl.load(lse_ptr + row)
    else:
        # Block-wise online log-sum-exp: the running max m and sum s of exp(z - m); the first block always has a
        # column, so m is finite after it.
        m = -float("inf")
        s = 0.0
        z_sum = 0.0
        for v0 in range(0, vocab, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            ok = cols < vocab
            z = tl.load(z_row + cols, mask=ok, other=-float("inf"))
            new_m = tl.maximum(m, tl.max(z, 0))
            s = s * tl.exp(m - new_m) + tl.sum(tl.exp(z - new_m), 0)
            z_sum += tl.sum(tl.where(ok, z, 0.0), 0)
            m = new_m
        lse = m + tl.log(s)
        picked = tl.load(z_row + tl.where(valid, label, 0))
        loss = lse - (1.0 - eps) * picked - eps * z_sum / vocab
        tl.store(loss_ptr + row, tl.where(valid, loss, 0.0))
        tl.store(lse_ptr + row, lse)
    if WRITE_GRAD:
        scale = tl.where(valid, tl.load(scale_ptr + row * scale_stride), 0.0)
        for v0 in range(0, vocab, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            ok = cols < vocab
            z = tl.load(z_row + cols, mask=ok, other=0.0)
            dz = tl.exp(z - lse) - eps / vocab
            dz = tl.where(cols == label, dz - (1.0 - eps), dz)
            tl.store(z_row + cols, dz * scale, mask=ok)


def _cross_entropy(z, labels, lse, loss, scale, label_smoothing, ignore_index, has_lse, write_grad):
    """Runs the kernel over a chunk's logits z (rows, V) float32, in place when write_grad. scale: a tensor of
    one value per row, or 0-d for all rows."""
    scale = scale.float().reshape(-1)
    _cross_entropy_kernel[(z.shape[0],)](
        z, z.stride(0), labels, lse, loss if loss is not None else lse, scale, 0 if scale.numel() == 1 else 1,
        z.shape[1], float(label_smoothing), int(ignore_index), HAS_LSE=has_lse, WRITE_GRAD=write_grad,
        BLOCK_V=min(BLOCK_V, triton.next_power_of_2(z.shape[1])), num_warps=NUM_WARPS)


def _precompute(reduction, flags):
    return reduction != "none" and any(flags)


def forward(hidden, weight, bias, labels, label_smoothing, ignore_index, reduction, hidden_grad, weight_grad,
            bias_grad):
    tokens = hidden.shape[0]
    labels = labels.contiguous()
    valid = labels != ignore_index
    count = valid.sum().float()
    precompute = _precompute(reduction, (hidden_grad, weight_grad, bias_grad))
    flags = [f and precompute for f in (hidden_grad, weight_grad, bias_grad)]
    scale = 1.0 / count if reduction == "mean" else torch.ones((), device=hidden.device)
    losses = torch.empty(tokens, dtype=torch.float32, device=hidden.device)
    lse = torch.empty_like(losses)
    grads = chunked.empty_grads(hidden, weight, bias, *flags)
    step = chunked.chunk_rows(weight.shape[0])
    for t0 in range(0, tokens, step):
        chunk = slice(t0, min(t0 + step, tokens))
        z = chunked.chunk_logits(hidden[chunk], weight, bias).contiguous()
        _cross_entropy(z, labels[chunk], lse[chunk], losses[chunk], scale, label_smoothing, ignore_index,
                       has_lse=False, write_grad=precompute)
        if precompute:
            chunked.accumulate_grads(z, hidden[chunk], weight, grads, chunk, *flags)
    total = losses.sum()
    loss = losses if reduction == "none" else total / count if reduction == "mean" else total
    return (loss, lse, *chunked.finish_grads(grads, hidden, weight, *flags))


def backward(grad_loss, hidden, weight, bias, labels, lse, label_smoothing, ignore_index, hidden_grad, weight_grad,
             bias_grad):
    """The per-token path: each chunk's logits recomputed, turned into dz in place from the saved lse."""
    labels, lse = labels.contiguous(), lse.contiguous()
    grad_loss = grad_loss.float().expand(hidden.shape[0]).contiguous()
    grads = chunked.empty_grads(hidden, weight, bias, hidden_grad, weight_grad, bias_grad)
    step = chunked.chunk_rows(weight.shape[0])
    for t0 in range(0, hidden.shape[0], step):
        chunk = slice(t0, min(t0 + step, hidden.shape[0]))
        z = chunked.chunk_logits(hidden[chunk], weight, bias).contiguous()
        _cross_entropy(z, labels[chunk], lse[chunk], None, grad_loss[chunk], label_smoothing, ignore_index,
                       has_lse=True, write_grad=True)
        chunked.accumulate_grads(z, hidden[chunk], weight, grads, chunk, hidden_grad, weight_grad, bias_grad)
    return chunked.finish_grads(grads, hidden, weight, hidden_grad, weight_grad, bias_grad)
