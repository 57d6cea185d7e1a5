"""Inputs for the frozen backbone ops' tests (CPU here, CUDA in test_gpu.py), and their float64 reference."""

import torch
from helpers import assert_close

from fastadapter.ops.backbone import frozen_attention, frozen_mlp, reference

F64 = torch.float64


def attention_case(batch, n, m, width, heads, cross, layer_norm, mask, seed, dtype=F64):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=F64) * scale).to(dtype)

    key_width = width + 5 if cross else width
    x = rand(batch, n, width)
    source = rand(batch, m, key_width) if cross else None
    weights = {"w_q": rand(width, width, scale=width ** -0.5), "b_q": rand(width, scale=0.1),
               "w_k": rand(width, key_width, scale=width ** -0.5), "b_k": rand(width, scale=0.1),
               "w_v": rand(width, key_width, scale=width ** -0.5), "b_v": None}
    norm = {"norm_weight": 1 + rand(width, scale=0.1), "norm_bias": rand(width, scale=0.1),
            "layer_norm": True} if layer_norm else {}
    keys = m if cross else n
    if mask == "padding":  # as BLIP's extended masks: (B, 1, 1, M), the dtype's min where padded
        additive = torch.zeros(batch, 1, 1, keys, dtype=dtype)
        additive[0, ..., keys - 2:] = torch.finfo(dtype).min
    elif mask == "full":
        additive = rand(batch, 1, n, keys)
    elif mask == "bool":
        additive = torch.rand(batch, heads, n, keys, generator=g) > 0.3
        additive[..., 0] = True
    else:
        additive = None
    return x, source, weights, norm, additive


def reference_attention(x, source, weights, norm, mask, heads, causal):
    if mask is not None and mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=F64).masked_fill_(~mask, torch.finfo(F64).min)
    cast = {k: None if v is None else v.double() for k, v in {**weights, **norm}.items() if k != "layer_norm"}
    return reference.attention(x, source, cast["w_q"], cast["b_q"], cast["w_k"], cast["b_k"], cast["w_v"],
                               cast["b_v"], cast.get("norm_weight"), cast.get("norm_bias"), "layer_norm" in norm, 1e-5,
                               None if mask is None else mask.double(), heads, causal,
                               (weights["w_q"].shape[0] // heads) ** -0.5)



def check_attention(case, dtype, tol, device="cpu"):
    """frozen_attention on `device` in `dtype`: the context and both input gradients against float64 autograd
    through the reference, on the inputs as rounded to dtype."""
    batch, n, m, width, heads, cross, layer_norm, mask, causal = case
    x, source, weights, norm, additive = attention_case(batch, n, m, width, heads, cross, layer_norm, mask, seed=n)
    weights, norm = ({k: v.to(dtype).double() if isinstance(v, torch.Tensor) else v for k, v in d.items()}
                     for d in (weights, norm))  # the reference runs on what the op sees
    leaves = [t.to(device, dtype).requires_grad_() for t in (x, source) if t is not None]
    cast = {k: v if not isinstance(v, torch.Tensor) else v.to(device, dtype) for k, v in {**weights, **norm}.items()}
    mask = additive if additive is None or additive.dtype == torch.bool else additive.to(dtype)
    got = frozen_attention(leaves[0], heads=heads, key_input=leaves[1] if cross else None, causal=causal,
                           mask=None if mask is None else mask.to(device), **cast)
    ref_leaves = [t.detach().cpu().double().requires_grad_() for t in leaves]
    expected = reference_attention(ref_leaves[0], ref_leaves[1] if cross else None, weights, norm, mask, heads, causal)
    grad = torch.randn(expected.shape, dtype=F64).to(dtype).double()
    assert got.shape == expected.shape and got.dtype == dtype and got.device.type == device
    assert_close(got.detach().cpu(), expected.detach(), tol, "context")
    for name, g, e in zip(("query_input", "key_input"), torch.autograd.grad(got, leaves, grad.to(device, dtype)),
                          torch.autograd.grad(expected, ref_leaves, grad)):
        assert_close(g.cpu(), e, tol, f"grad {name}")


def check_mlp(activation, layer_norm, projection, dtype, tol, device="cpu", tokens=37, width=24, hidden=41):
    """frozen_mlp on `device` in `dtype`: y and the input gradient against float64 autograd through the reference."""
    g = torch.Generator().manual_seed(len(activation))
    x64 = torch.randn(3, tokens, width, generator=g, dtype=F64).to(dtype).double()
    params = {"w_in": torch.randn(hidden, width, generator=g, dtype=F64) / width ** 0.5,
              "b_in": torch.randn(hidden, generator=g, dtype=F64) * 0.1,
              "w_out": torch.randn(width, hidden, generator=g, dtype=F64) / hidden ** 0.5 if projection else None,
              "b_out": torch.randn(width, generator=g, dtype=F64) if projection else None,
              "norm_weight": 1 + 0.1 * torch.randn(width, generator=g, dtype=F64) if layer_norm else None,
              "norm_bias": 0.1 * torch.randn(width, generator=g, dtype=F64) if layer_norm else None}
    params = {k: None if v is None else v.to(dtype).double() for k, v in params.items()}
    x = x64.to(device, dtype).requires_grad_()
    got = frozen_mlp(x, activation=activation, layer_norm=layer_norm,
                     **{k: None if v is None else v.to(device, dtype) for k, v in params.items()})
    x_ref = x64.clone().requires_grad_()
    expected = reference.mlp(x_ref, params["norm_weight"], params["norm_bias"], layer_norm, 1e-5, params["w_in"],
                             params["b_in"], params["w_out"], params["b_out"], activation)
    grad = torch.randn(expected.shape, generator=g, dtype=F64).to(dtype).double()
    assert_close(got.detach().cpu(), expected.detach(), tol, "y")
    assert_close(torch.autograd.grad(got, x, grad.to(device, dtype))[0].cpu(),
                 torch.autograd.grad(expected, x_ref, grad)[0], tol, "grad x")
