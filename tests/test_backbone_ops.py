"""The frozen backbone ops (fastadapter.ops.backbone): frozen_attention and frozen_mlp against their float64 eager
references (what BLIP computes), with every input gradient, on fresh random inputs of odd sizes; what they save
for backward; bad input; opcheck; torch.compile."""

import pytest
import torch
from backbone_helpers import attention_case, check_attention, check_mlp

from fastadapter.bench.measure import saved_bytes
from fastadapter.ops.backbone import ACTIVATIONS, frozen_attention, frozen_mlp
from fastadapter.ops.backbone import attention as attention_op
from fastadapter.ops.backbone import mlp as mlp_op

F64 = torch.float64
TOLERANCE = {torch.float32: 2e-5, torch.float64: 1e-12}


ATTENTION_CASES = [  # batch, n, m, width, heads, cross, layer_norm, mask, causal
    (2, 7, 7, 32, 4, False, True, None, False),  # vision: pre-LN self-attention
    (3, 5, 5, 24, 3, False, False, "padding", False),  # text encoder
    (2, 9, 9, 32, 4, False, False, "full", True),  # text decoder: causal and a 4-D mask
    (3, 5, 13, 32, 2, True, False, "padding", False),  # cross-attention to image embeddings
    (1, 37, 37, 48, 3, False, True, "bool", True),
    (2, 1, 1, 16, 1, False, False, None, False),
]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("case", ATTENTION_CASES, ids=lambda c: "-".join(map(str, c)))
def test_attention_matches_reference_with_every_input_gradient(case, dtype):
    check_attention(case, dtype, TOLERANCE[dtype])


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("layer_norm, projection", [(True, True), (False, False), (False, True)])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_mlp_matches_reference_with_the_input_gradient(activation, layer_norm, projection, dtype, monkeypatch):
    monkeypatch.setattr(mlp_op, "BLOCK_ROWS", 16)  # many row blocks, the last one short
    check_mlp(activation, layer_norm, projection, dtype, TOLERANCE[dtype])


def test_attention_saves_no_probabilities_and_no_projections():
    """Saved: the input, O (as wide as the input) and the row statistics; eager saves q, k, v and (N, N) per head."""
    batch, n, width, heads = 2, 64, 32, 4
    x, _, weights, norm, _ = attention_case(batch, n, n, width, heads, False, True, None, seed=3,
                                             dtype=torch.float32)
    x.requires_grad_()
    frozen = [t for t in (*weights.values(), norm["norm_weight"], norm["norm_bias"]) if t is not None]
    lean, _ = saved_bytes(lambda: frozen_attention(x, heads=heads, **weights, **norm), exclude=frozen)
    eager, _ = saved_bytes(lambda: frozen_attention(x, heads=heads, **weights, **norm, backend="eager"),
                           exclude=frozen)
    row = batch * n * width * 4
    assert lean <= 2 * row + batch * heads * n * 4 + 2 * batch * n * 4
    assert eager >= batch * heads * n * n * 4 + 3 * row


def test_mlp_saves_only_its_input_and_the_norm_statistics():
    x = torch.randn(2, 50, 16, requires_grad=True)
    w_in, w_out = torch.randn(64, 16), torch.randn(16, 64)
    lean, _ = saved_bytes(lambda: frozen_mlp(x, w_in, None, w_out, None, layer_norm=True), exclude=(w_in, w_out))
    assert lean == x.numel() * 4 + 2 * 100 * 4


def _bad_attention(**changes):
    x, _, weights, _, _ = attention_case(2, 5, 5, 16, 4, False, False, None, seed=1, dtype=torch.float32)
    args = {"query_input": x, "heads": 4, **weights, **changes}
    return lambda: frozen_attention(**args)


@pytest.mark.parametrize("call, error, match", [
    (_bad_attention(query_input=torch.randn(5, 16)), ValueError, r"query_input must be \(B, N, D\)"),
    (_bad_attention(heads=3), ValueError, "heads=3 must be a positive integer dividing"),
    (_bad_attention(w_q=torch.randn(16, 8)), ValueError, "do not fit inputs of width 16"),
    (_bad_attention(mask=torch.zeros(2, 1, 1, 6)), ValueError, r"does not broadcast to \(B, H, N, M\)"),
    (_bad_attention(key_input=torch.randn(3, 7, 16)), ValueError, "key_input must be"),
    (_bad_attention(w_k=torch.randn(16, 16, dtype=F64)), ValueError, "w_k is torch.float64"),
    (_bad_attention(w_v=torch.randn(16, 16, requires_grad=True)), ValueError, "w_v requires grad"),
    (_bad_attention(backend="cuda"), Exception, "cuda"),
    (lambda: frozen_mlp(torch.randn(4, 8), torch.randn(6, 8), None, activation="tanh"), ValueError,
     "unknown activation 'tanh'"),
    (lambda: frozen_mlp(torch.randn(4, 8), torch.randn(6, 7), None), ValueError, "do not fit an input of width 8"),
    (lambda: frozen_mlp(torch.randn(4, 8), torch.randn(6, 8, requires_grad=True), None), ValueError,
     "w_in requires grad"),
])
def test_bad_input_is_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_opcheck():
    x, source, weights, _, mask = attention_case(2, 5, 9, 16, 2, True, False, "padding", seed=4,
                                                  dtype=torch.float32)
    args = (x.requires_grad_(), source.requires_grad_(), *weights.values(), None, None, False, 1e-5, mask, 2,
            False, 0.25)
    torch.library.opcheck(attention_op.attention_forward, args)
    x, _, weights, norm, _ = attention_case(2, 5, 5, 16, 2, False, True, None, seed=5, dtype=torch.float32)
    args = (x.requires_grad_(), None, *weights.values(), norm["norm_weight"], norm["norm_bias"], True, 1e-5, None,
            2, True, 0.25)
    torch.library.opcheck(attention_op.attention_forward, args)
    x = torch.randn(3, 7, 8, requires_grad=True)
    torch.library.opcheck(mlp_op.mlp_forward, (x, torch.ones(8), torch.zeros(8), True, 1e-5, torch.randn(12, 8),
                                               torch.randn(12), torch.randn(8, 12), None, "gelu"))


def test_compile_fullgraph():
    x, source, weights, _, mask = attention_case(2, 6, 11, 16, 2, True, False, "padding", seed=6,
                                                  dtype=torch.float32)
    w_in, w_out = torch.randn(24, 16), torch.randn(16, 24)

    def block(x, source):
        context = frozen_attention(x, heads=2, key_input=source, mask=mask, **weights)
        return frozen_mlp(context, w_in, None, w_out, None, layer_norm=True).pow(2).sum()

    x.requires_grad_()
    source.requires_grad_()
    compiled = torch.compile(block, fullgraph=True, backend="aot_eager")
    got, expected = compiled(x, source), block(x, source)
    torch.testing.assert_close(got, expected)
    for g, e in zip(torch.autograd.grad(got, (x, source)), torch.autograd.grad(expected, (x, source))):
        torch.testing.assert_close(g, e)
