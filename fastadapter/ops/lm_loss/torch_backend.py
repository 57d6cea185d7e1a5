"""The LM loss op's contract (csrc/lm_loss/lm_loss.h) in plain PyTorch, chunked over tokens like the fused
backends: at most CHUNK_ELEMENTS float32 logits exist at a time.

The math, per token t with label y (not ignore_index), logits z = W h_t + b over V classes, smoothing eps:
loss_t = lse_t - (1 - eps) z_y - (eps / V) sum_v z_v, and d loss_t / d z = softmax(z) - (1 - eps) onehot(y) - eps/V.
Ignored tokens have loss 0 and no gradient; "mean" divides by the count of the others (0/0 = NaN when there are
none, as F.cross_entropy). With "mean"/"sum" the forward also returns the gradients of the reduced loss, so that
backward only scales them; with "none" backward recomputes each chunk's logits from the saved lse.
"""

from __future__ import annotations

import torch

CHUNK_ELEMENTS = 1 << 23  # 32 MiB of float32 logits per chunk
MIN_CHUNK = 16


def chunk_rows(vocab):
    return max(MIN_CHUNK, CHUNK_ELEMENTS // max(vocab, 1))


def _mm_float(a, b):
    """a @ b with a float32 result: on CUDA, 16-bit operands stay 16-bit on the tensor cores (mm's out_dtype,
    torch >= 2.8); elsewhere both are upcast."""
    if a.is_cuda and b.dtype in (torch.bfloat16, torch.float16):
        try:
            return torch.mm(a.to(b.dtype), b, out_dtype=torch.float32)
        except (TypeError, RuntimeError):  # a torch without out_dtype, or a case it does not cover
            pass
    return a.float() @ b.float()


def chunk_logits(h, weight, bias):
    z = _mm_float(h, weight.t())
    return z if bias is None else z + bias.float()


def _grad_logits(z, lse, labels, valid, eps, scale):
    """scale_t (softmax(z) - targets) over a chunk, zero for ignored tokens; scale (chunk,)."""
    dz = torch.exp(z - lse[:, None]) - eps / z.shape[1]
    rows = torch.nonzero(valid).squeeze(1)
    dz[rows, labels[rows]] -= 1 - eps
    return dz * torch.where(valid, scale, torch.zeros_like(scale))[:, None]  # 0 * inf is NaN: select


def accumulate_grads(dz, h, weight, grads, chunk, hidden_grad, weight_grad, bias_grad):
    if hidden_grad:  # on CUDA dz meets the 16-bit weight in its dtype, as flash attention's backward does
        grads[0][chunk] = _mm_float(dz, weight).to(grads[0].dtype)
    if weight_grad:
        grads[1] += _mm_float(dz.t(), h)
    if bias_grad:
        grads[2] += dz.sum(0)


def empty_grads(hidden, weight, bias, hidden_grad, weight_grad, bias_grad):
    f32 = dict(dtype=torch.float32, device=hidden.device)
    return [torch.zeros(hidden.shape, **f32) if hidden_grad else hidden.new_empty(0),
            torch.zeros(weight.shape, **f32) if weight_grad else weight.new_empty(0),
            torch.zeros(weight.shape[0], **f32) if bias_grad else weight.new_empty(0)]


def finish_grads(grads, hidden, weight, hidden_grad, weight_grad, bias_grad):
    return (grads[0].to(hidden.dtype) if hidden_grad else grads[0],
            grads[1].to(weight.dtype) if weight_grad else grads[1],
            grads[2].to(weight.dtype) if bias_grad else grads[2])


def forward(hidden, weight, bias, labels, label_smoothing, ignore_index, reduction, hidden_grad, weight_grad,
            bias_grad):
    tokens, vocab = hidden.shape[0], weight.shape[0]
    valid_all = labels != ignore_index
    count = valid_all.sum().float()
    precompute = reduction != "none" and (hidden_grad or weight_grad or bias_grad)
    scale = (1.0 / count if reduction == "mean" else torch.ones((), device=hidden.device))
    losses = torch.empty(tokens, dtype=torch.float32, device=hidden.device)
    lse_all = torch.empty_like(losses)
    grads = empty_grads(hidden, weight, bias, hidden_grad and precompute, weight_grad and precompute,
                         bias_grad and precompute)
    step = chunk_rows(vocab)
    for t0 in range(0, tokens, step):
        chunk = slice(t0, min(t0 + step, tokens))
        z = chunk_logits(hidden[chunk], weight, bias)
        labels_c, valid = labels[chunk], valid_all[chunk]
        lse = torch.logsumexp(z, 1)
        picked = z.gather(1, labels_c.clamp_min(0)[:, None]).squeeze(1)
        loss = lse - (1 - label_smoothing) * picked - label_smoothing * z.mean(1)
        losses[chunk] = torch.where(valid, loss, torch.zeros_like(loss))
        lse_all[chunk] = lse
        if precompute:
            dz = _grad_logits(z, lse, labels_c, valid, label_smoothing, scale.expand(z.shape[0]))
            accumulate_grads(dz, hidden[chunk], weight, grads, chunk, hidden_grad, weight_grad, bias_grad)
    total = losses.sum()
    loss = losses if reduction == "none" else total / count if reduction == "mean" else total
    return (loss, lse_all, *finish_grads(grads, hidden, weight, hidden_grad and precompute,
                                    weight_grad and precompute, bias_grad and precompute))


def backward(grad_loss, hidden, weight, bias, labels, lse, label_smoothing, ignore_index, hidden_grad, weight_grad,
             bias_grad):
    """The per-token path (reduction "none"): grad_loss (T,) weighs each token's gradient."""
    grads = empty_grads(hidden, weight, bias, hidden_grad, weight_grad, bias_grad)
    step = chunk_rows(weight.shape[0])
    for t0 in range(0, hidden.shape[0], step):
        chunk = slice(t0, min(t0 + step, hidden.shape[0]))
        z = chunk_logits(hidden[chunk], weight, bias)
        dz = _grad_logits(z, lse[chunk], labels[chunk], labels[chunk] != ignore_index, label_smoothing,
                          grad_loss[chunk].float())
        accumulate_grads(dz, hidden[chunk], weight, grads, chunk, hidden_grad, weight_grad, bias_grad)
    return finish_grads(grads, hidden, weight, hidden_grad, weight_grad, bias_grad)
