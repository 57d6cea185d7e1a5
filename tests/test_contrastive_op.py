"""The contrastive op (fastadapter.contrastive_loss, fastadapter.itc_loss) on every CPU backend against the float64
eager reference: losses and every gradient (both features, the temperature, through the normalisation), with and
without ids, soft targets, unequal counts, keys without grad, every reduction; and against formulas written
independently (F.cross_entropy on the materialised logits, Hugging Face's BLIP loss)."""

import pytest
import torch
import torch.nn.functional as F
from contrastive_helpers import check_itc, check_queue_on, contrastive_backends, features, itc_case
from helpers import assert_close
from transformers.models.blip import modeling_blip

import fastadapter
from fastadapter.ops.contrastive import torch_backend

BACKENDS = contrastive_backends()
# (n_image, n_text, d, ids, lambda_, reduction): the sizes, not their cross product.
CASES = [(1, 1, 16, False, 0.5, "mean"), (2, 2, 257, False, 0.3, "sum"), (37, 37, 16, False, 1.0, "mean"),
         (37, 37, 257, True, 0.0, "none"), (37, 53, 16, True, 0.3, "mean"), (300, 300, 256, False, 0.5, "mean"),
         (300, 211, 16, True, 0.5, "none")]


def _interpreted(backend):
    return backend == "triton"


@pytest.fixture(autouse=True)
def small_torch_tiles(monkeypatch):
    monkeypatch.setattr(torch_backend, "BLOCK", 16)  # cross tile edges on small inputs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(map(str, c)))
def test_itc_matches_reference(backend, case):
    n_image, n_text, d, ids, lambda_, reduction = case
    g = torch.Generator().manual_seed(n_image * 1000 + d)
    kw = itc_case(n_image, n_text, ids, lambda_, reduction, g)
    check_itc(backend, features(n_image, d, g), features(n_text, d, g), kw)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("normalize", [True, False])
def test_soft_targets(backend, normalize):
    g = torch.Generator().manual_seed(3)
    n, d = (37, 16) if _interpreted(backend) else (70, 33)
    kw = dict(momentum_image_feat=features(n, d, g), momentum_text_feat=features(n, d, g), alpha=0.4,
              normalize=normalize, image_ids=torch.arange(n) // 2, text_ids=torch.arange(n) // 2)
    scale = 1.0 if normalize else 0.2  # raw features: keep the logits in a trainable range
    check_itc(backend, features(n, d, g) * scale, features(n, d, g) * scale, kw)


@pytest.mark.parametrize("backend", BACKENDS)
def test_queue_of_keys_without_grad(backend):
    check_queue_on("cpu", backend, *((9, 50, 16) if _interpreted(backend) else ()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(backend, dtype):
    if _interpreted(backend) and dtype == torch.bfloat16:
        pytest.skip("the Triton interpreter cannot do bf16 arithmetic; the GPU runs it (test_gpu.py)")
    g = torch.Generator().manual_seed(11)
    check_itc(backend, features(37, 24, g), features(37, 24, g), dict(lambda_=0.3), dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_against_cross_entropy_and_hugging_face(backend):
    """Written independently of reference.py: F.cross_entropy over both directions, and transformers' own BLIP
    loss (image_text_contrastive_loss in 5.x, blip_loss in 4.5x) on normalised embeddings times 1/tau."""
    g = torch.Generator().manual_seed(13)
    n = 21 if _interpreted(backend) else 64
    image, text = features(n, 32, g).float(), features(n, 32, g).float()
    tau = 0.05
    fused = fastadapter.itc_loss(image, text, tau, lambda_=0.5, backend=backend)
    logits = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).t() / tau
    target = torch.arange(n)
    expected = 0.5 * F.cross_entropy(logits, target) + 0.5 * F.cross_entropy(logits.t(), target)
    assert_close(fused.detach(), expected.double(), 1e-5, "itc vs F.cross_entropy")
    hf_loss = getattr(modeling_blip, "image_text_contrastive_loss", None) or modeling_blip.blip_loss
    assert_close(fused.detach(), hf_loss(logits.t()).double(), 1e-5, "itc vs Hugging Face")
    one_way = fastadapter.contrastive_loss(text, image, tau, backend=backend, reduction="sum")
    assert_close(one_way.detach(), F.cross_entropy(logits.t(), target, reduction="sum").double(), 1e-5,
                 "contrastive_loss vs F.cross_entropy")


@pytest.mark.parametrize("forward_backend", BACKENDS)
@pytest.mark.parametrize("backward_backend", BACKENDS)
def test_backends_share_the_saved_tensor_contract(forward_backend, backward_backend):
    g = torch.Generator().manual_seed(17)
    q, k = features(19, 16, g).float(), features(23, 16, g).float()
    ids = (torch.arange(19) % 7, torch.arange(23) % 7)
    soft = (features(19, 8, g).float(), features(23, 8, g).float())
    tau = torch.tensor(0.1)
    args = (q, k, tau, *ids, *soft, 0.3, True)
    out = torch.ops.fastadapter.contrastive_forward(*args, True, True, forward_backend)
    expected = torch.ops.fastadapter.contrastive_forward(*args, True, True, "torch")
    for got, want, name in zip(out, expected, ("row_loss", "column_loss", "row_stats", "column_stats")):
        assert_close(got, want.double(), 1e-5, f"{forward_backend} {name}")
    grads = torch.rand(19, generator=g), torch.rand(23, generator=g)
    got = torch.ops.fastadapter.contrastive_backward(*grads, *args, out[2], out[3], True, True, True,
                                                     backward_backend)
    want = torch.ops.fastadapter.contrastive_backward(*grads, *args, expected[2], expected[3], True, True, True,
                                                      "torch")
    for a, b, name in zip(got, want, ("grad_query", "grad_keys", "grad_temperature")):
        assert_close(a, b.double(), 1e-5, f"{forward_backend} -> {backward_backend} {name}")
