"""GPU cases: the cuda and triton backends on CUDA tensors against the float64 reference. They need a
CUDA device and are skipped, with that reason, where there is none (CI); benchmarks/gpu/run.sh runs them."""

import pytest
import torch
from backbone_helpers import check_attention, check_mlp
from helpers import cast, check_against_reference, check_autocast, check_strided_parameters, make_inputs

import fastadapter
from fastadapter.ops.adapter import reference
from fastadapter.ops.adapter.registration import cuda_packed_rows

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU case: no CUDA device here")
GPU_BACKENDS = ("cuda", "triton", "torch")
# "cuda_packed": the cuda backend with its opt-in row-in-registers kernels (FASTADAPTER_CUDA_PACKED_ROWS=1),
# taken where r splits into 16-byte packs; elsewhere the general kernels run as with plain "cuda".
CHECKED = ("cuda", "cuda_packed", "triton", "torch")


def check(backend, inputs64, dtype, activation="gelu", norm="layernorm", recompute=False):
    with cuda_packed_rows(backend == "cuda_packed"):
        check_against_reference("cuda" if backend == "cuda_packed" else backend, inputs64, dtype, activation, norm,
                                recompute, device="cuda")


@pytest.mark.parametrize("backend", CHECKED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("tokens,width,r", [(1, 64, 48), (7, 64, 1), (7, 768, 300), (1000, 768, 256),
                                            (4617, 768, 64), (1000, 64, 1024)])
def test_sizes_and_dtypes(backend, dtype, tokens, width, r):
    check(backend, make_inputs(tokens, width, r), dtype)


@pytest.mark.parametrize("backend", CHECKED)
@pytest.mark.parametrize("activation", reference.ACTIVATIONS)
@pytest.mark.parametrize("norm", reference.NORMS)
def test_activations_norms_recompute(backend, activation, norm):
    check(backend, make_inputs(33, 96, 40, lead=(3,)), torch.float32, activation, norm)
    check(backend, make_inputs(9, 64, 20, biases=False), torch.float32, activation, norm, recompute=True)
    check(backend, make_inputs(300, 96, 128), torch.bfloat16, activation, norm)  # 16 packs: the packed kernels


@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_strided_parameters_on_gpu(backend):
    check_strided_parameters(backend, device="cuda")


@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_on_gpu(backend, dtype):
    check_autocast(backend, dtype, device="cuda")
    check_autocast(backend, dtype, x_dtype=dtype, device="cuda")


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("forward_backend", GPU_BACKENDS)
@pytest.mark.parametrize("backward_backend", GPU_BACKENDS)
def test_gpu_backends_share_the_contract(forward_backend, backward_backend, packed):
    with cuda_packed_rows(packed):
        share_the_contract(forward_backend, backward_backend)


def share_the_contract(forward_backend, backward_backend):
    x, *params = cast(make_inputs(11, 64, 24), torch.float32, False, device="cuda")  # r=24: 6 float32 packs
    options = ("gelu", "layernorm", 1e-5)
    y, h, mean, rstd = torch.ops.fastadapter.adapter_forward(x, *params, *options, False, forward_backend)
    grad_y = torch.randn_like(y)
    mixed = torch.ops.fastadapter.adapter_backward(grad_y, x, h, mean, rstd, *params[:5], *options, False, True,
                                                   backward_backend)
    plain = torch.ops.fastadapter.adapter_backward(grad_y, x, h, mean, rstd, *params[:5], *options, False, True,
                                                   "torch")
    for got, expected in zip(mixed, plain):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ("cuda", "torch"))
def test_gpu_opcheck_and_compile(backend):
    x, *params = [None if t is None else t.to("cuda") for t in cast(make_inputs(6, 32, 8, lead=(2,)), torch.float32)]
    torch.library.opcheck(torch.ops.fastadapter.adapter_forward.default,
                          (x, *params, "silu", "layernorm", 1e-5, False, backend))
    torch._dynamo.reset()
    module = fastadapter.Adapter(64, fastadapter.AdapterConfig(bottleneck=24, init="normal", backend=backend),
                                 device="cuda")
    inp = torch.randn(2, 9, 64, device="cuda")
    compiled = torch.compile(lambda t: module(t).sin(), fullgraph=True)
    torch.testing.assert_close(compiled(inp), module(inp).sin())


def test_cuda_empty_input_and_patched_model():
    from blip_fixtures import build

    x, *params = cast(make_inputs(5, 64, 16), torch.float32, device="cuda")
    empty = fastadapter.adapter(x[:0], *params, backend="cuda")
    assert empty.shape == (0, 64)
    empty.sum().backward()  # no rows: the backward launches nothing and every parameter grad is zero
    assert all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in params)
    model, _, output = build("BlipForConditionalGeneration", device="cuda")
    model.eval()
    with torch.no_grad():
        before = output(model)
    fastadapter.patch(model, fastadapter.AdapterConfig(bottleneck=8))
    assert all(a.down.weight.is_cuda for a in fastadapter.adapters(model).values())
    with torch.no_grad():
        assert torch.equal(output(model), before)


def test_cuda_names_its_bottleneck_limit():
    leaves = cast(make_inputs(4, 64, 3073), torch.float32, device="cuda")
    y = fastadapter.adapter(*leaves, backend="cuda")
    with pytest.raises(RuntimeError, match="at most 3072, got 3073"):
        y.sum().backward()


def test_timed_step_phases_from_cuda_events():
    """The bench's step split on GPU: CUDA events between forward, backward and optimizer, no syncs added; the
    device time between the first and the last event lies within the host's time for the whole step."""
    from fastadapter.bench import measure

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(1024, 1024, device="cuda")

        def forward(self, x):
            return type("Output", (), {"loss": self.linear(x).square().mean()})()

    model = Model()
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    x = torch.randn(4096, 1024, device="cuda")
    for _ in range(2):
        step = measure.timed_train_step(model, {"x": x}, optimizer, "cuda")
    assert step.phases.keys() == set(measure.STEP_PHASES) and min(step.phases.values()) > 0
    assert sum(step.phases.values()) <= step.seconds * 1.001 and model.linear.weight.grad is None


@pytest.mark.parametrize("backend", ("triton", "cuda", "torch"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n_image,n_text,d,ids", [(1, 1, 16, False), (37, 53, 257, True), (300, 300, 256, False),
                                                  (1000, 777, 256, True), (4500, 4200, 32, True)])  # last: 4 tiles
def test_contrastive_sizes_and_dtypes(backend, dtype, n_image, n_text, d, ids):
    from contrastive_helpers import check_itc_on

    check_itc_on("cuda", backend, n_image, n_text, d, ids, dtype)


@pytest.mark.parametrize("backend", ("triton", "cuda", "torch"))
def test_contrastive_soft_targets_and_queue(backend):
    from contrastive_helpers import check_queue_on

    check_queue_on("cuda", backend)


@pytest.mark.parametrize("backend", ("triton", "torch"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_lm_loss_on_cuda(backend, dtype, reduction):
    """lm_loss's GPU backends against F.cross_entropy in float64, the loss and the hidden states' gradient."""
    import torch.nn.functional as F
    from helpers import TOLERANCE, assert_close
    from test_lm_loss import _inputs

    hidden, weight, bias, labels = _inputs(700, 64, 3001, seed=3)
    h = hidden.to("cuda", dtype).requires_grad_()
    loss = fastadapter.lm_loss(h, weight.to("cuda", dtype), bias.to("cuda", dtype), labels.cuda(), 0.1,
                               reduction=reduction, backend=backend)
    (grad,) = torch.autograd.grad(loss.sum(), h)
    ref_h = h.detach().cpu().double().requires_grad_()
    ref = F.cross_entropy(F.linear(ref_h, weight.to(dtype).double(), bias.to(dtype).double()), labels,
                          label_smoothing=0.1, reduction=reduction)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_h)
    assert_close(loss.detach().cpu(), ref.detach(), TOLERANCE[dtype], "loss", floor=1.0)
    assert_close(grad.cpu().double(), ref_grad, TOLERANCE[dtype], "grad hidden", floor=1e-3)


@pytest.mark.parametrize("backend", ("triton", "cuda", "torch"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("n_image,n_text,d,ids", [(1, 1, 16, False), (37, 53, 257, True), (1000, 777, 256, True),
                                                  (4500, 4200, 32, True)])  # last: 4 cuda tiles
def test_itm_margin_sizes_and_dtypes(backend, dtype, n_image, n_text, d, ids):
    from itm_helpers import check_margin

    check_margin(backend, n_image, n_text, d, ids, dtype=dtype, device="cuda")


@pytest.mark.parametrize("backend", ("triton", "cuda", "torch"))
def test_itm_sampler_on_gpu(backend):
    from itm_helpers import check_never_positive, chi_square_p_value

    for n_image, n_text, d, ids in [(2, 2, 8, False), (45, 19, 16, True), (4500, 4200, 32, True)]:
        check_never_positive(backend, n_image, n_text, d, ids, device="cuda")
    assert chi_square_p_value(backend, device="cuda") > 1e-3


# The lean backbone's ops (ATen's memory-efficient attention on CUDA) at BLIP-base shapes and odd ones: vision
# self-attention with its folded norm, the text decoder's causal 4-D mask, cross-attention to 577 (unaligned) keys.
BACKBONE_CASES = [(2, 577, 577, 768, 12, False, True, None, False), (3, 35, 35, 768, 12, False, False, "full", True),
                  (3, 35, 577, 768, 12, True, False, "padding", False),
                  (3, 5, 13, 32, 2, True, False, "padding", False), (1, 37, 37, 48, 3, False, True, "bool", True)]


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("case", BACKBONE_CASES, ids=lambda c: "-".join(map(str, c)))
def test_frozen_attention_on_cuda(case, dtype, tol):
    check_attention(case, dtype, tol, device="cuda")


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("layer_norm, projection", [(True, True), (False, False)])
def test_frozen_mlp_on_cuda(layer_norm, projection, dtype, tol):
    check_mlp("gelu", layer_norm, projection, dtype, tol, device="cuda", tokens=577, width=768, hidden=3072)


def test_lean_backbone_on_cuda():
    """patch(backbone="lean") on a CUDA model: the eager backbone's loss and adapter gradients."""
    from blip_fixtures import build

    results = []
    for lean in ("eager", "lean"):
        model, _, output = build("BlipForConditionalGeneration", device="cuda")
        torch.manual_seed(1)
        fastadapter.patch(model, fastadapter.AdapterConfig(bottleneck=8, init="normal", backbone=lean))
        model.train()
        loss = output(model)
        trained = [p for p in model.parameters() if p.requires_grad]
        results.append((loss, torch.autograd.grad(loss, trained)))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-5)
    for got, expected in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("backend", ("triton", "cuda", "torch"))
@pytest.mark.parametrize("r", (256, 300))  # the triton backend's one-kernel path, and its two-kernel path
def test_adapter_forward_backward_replays_in_a_cuda_graph(backend, r):
    """Captured once, replayed on new values in the same buffers: no host sync, no value-dependent allocation."""
    x, *params = cast(make_inputs(577, 768, r, lead=(2,)), torch.bfloat16, device="cuda")
    grad_y = torch.randn_like(x)
    leaves = [x, *[p for p in params if p is not None]]

    def step():
        return torch.autograd.grad(fastadapter.adapter(x, *params, backend=backend), leaves, grad_y)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (Triton compiles, cuBLAS plans) off the capture
        for _ in range(2):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    with torch.no_grad():
        x.copy_(torch.randn_like(x))
        grad_y.copy_(torch.randn_like(grad_y))
    graph.replay()
    torch.cuda.synchronize()
    for got, expected in zip(captured, step()):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the same kernels on the same values


def test_cuda_backend_gemms_take_cublaslt_with_their_epilogues():
    """On a GPU every GEMM of the cuda backend's forward and backward runs through cuBLASLt (bias, residual and
    bias-gradient epilogues); a fallback to ATen's path would show here with its reason."""
    before = fastadapter._C.adapter_cuda_gemm_paths()
    check("cuda", make_inputs(577, 768, 256, lead=(2,)), torch.bfloat16)
    after = fastadapter._C.adapter_cuda_gemm_paths()
    assert after["cublaslt"] - before["cublaslt"] >= 6
    assert after["fallback"] == before["fallback"], after["last_fallback"]
