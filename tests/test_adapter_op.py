"""The fused adapter op against the float64 eager reference: values and every gradient."""

import os
import subprocess
import sys

import pytest
import torch
from helpers import (
    assert_matches_reference,
    cast,
    check_against_reference,
    check_autocast,
    check_strided_parameters,
    cpu_backends,
    make_inputs,
)

import fastadapter
from fastadapter import _C
from fastadapter.ops.adapter import reference
from fastadapter.ops.adapter.registration import cuda_packed_rows

BACKENDS = cpu_backends()
SIZES = [(1, 64, 48), (7, 64, 1), (7, 768, 300), (1000, 64, 256), (1000, 768, 48), (7, 64, 256), (1000, 768, 256)]
# The Triton interpreter is slow on CPU: it gets the sizes up to 1000 x 64 x 256 here; the GPU run has all.
SIZE_CASES = [(b, *size) for b in BACKENDS for size in SIZES if b != "triton" or size[0] * size[1] * size[2] <= 2 ** 24]


@pytest.mark.parametrize("backend,tokens,width,r", SIZE_CASES)
def test_sizes_float32(backend, tokens, width, r):
    check_against_reference(backend, make_inputs(tokens, width, r), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", reference.ACTIVATIONS)
@pytest.mark.parametrize("norm", reference.NORMS)
def test_activations_and_norms(backend, activation, norm):
    check_against_reference(backend, make_inputs(13, 64, 37, lead=(2,)), torch.float32, activation, norm)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision(backend, dtype):
    check_against_reference(backend, make_inputs(57, 768, 256), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_biases_and_recompute(backend):
    check_against_reference(backend, make_inputs(9, 64, 20, biases=False), torch.float32, norm="rmsnorm")
    check_against_reference(backend, make_inputs(9, 64, 20), torch.float32, recompute=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_one_dimensional_and_non_contiguous(backend):
    width, r = 64, 16
    x, *params = cast(make_inputs(5, width, r), torch.float32)
    empty = fastadapter.adapter(x[:0], *params, backend=backend)
    assert empty.shape == (0, width)
    empty.sum().backward()
    assert params[0].grad is not None and torch.count_nonzero(params[0].grad) == 0

    single = fastadapter.adapter(x.detach()[0], *params, backend=backend)
    expected = reference.adapter(x.detach()[0], *params)
    assert single.shape == (width,)
    torch.testing.assert_close(single, expected, rtol=1e-5, atol=1e-5)

    wide = torch.randn(width, 5, dtype=torch.float32)
    strided = wide.t()  # (5, width), not contiguous
    assert not strided.is_contiguous()
    torch.testing.assert_close(fastadapter.adapter(strided, *params, backend=backend),
                               reference.adapter(strided, *params), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_strided_parameters(backend):
    check_strided_parameters(backend)


# The Triton interpreter does not run bfloat16 or float16 on CPU: tests/test_gpu.py checks Triton under autocast.
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("x_dtype", ["float32", "autocast dtype"])
def test_autocast(backend, dtype, x_dtype):
    check_autocast(backend, dtype, torch.float32 if x_dtype == "float32" else dtype)


def test_autocast_under_torch_compile():
    torch._dynamo.reset()
    module = fastadapter.Adapter(64, fastadapter.AdapterConfig(bottleneck=24, init="normal", backend="cpu"))

    def step(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        return y, (y.float() * torch.sin(x)).sum()

    x = torch.randn(2, 9, 64, requires_grad=True)
    (y, loss), (y_eager, loss_eager) = torch.compile(step, fullgraph=True, backend="aot_eager")(x), step(x)
    assert y.dtype == y_eager.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_eager, rtol=0, atol=0)
    params = [x, *module.parameters()]
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(loss_eager, params)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want)


def test_default_init_is_identity():
    module = fastadapter.Adapter(64, fastadapter.AdapterConfig(bottleneck=16))
    x = torch.randn(3, 5, 64)
    assert torch.equal(module(x), x)


@pytest.mark.parametrize("forward_backend", BACKENDS)
@pytest.mark.parametrize("backward_backend", BACKENDS)
def test_backends_share_the_saved_tensor_contract(forward_backend, backward_backend):
    x, *params = cast(make_inputs(11, 64, 24), torch.float32, requires_grad=False)
    options = ("gelu", "layernorm", 1e-5)
    y, h, mean, rstd = torch.ops.fastadapter.adapter_forward(x, *params, *options, False, forward_backend)
    grad_y = torch.randn_like(y)
    mixed = torch.ops.fastadapter.adapter_backward(grad_y, x, h, mean, rstd, *params[:5], *options, False, True,
                                                   backward_backend)
    _, h0, mean0, rstd0 = torch.ops.fastadapter.adapter_forward(x, *params, *options, False, "torch")
    torch.testing.assert_close(h, h0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(mean, mean0, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rstd, rstd0, rtol=1e-5, atol=1e-6)
    plain = torch.ops.fastadapter.adapter_backward(grad_y, x, h0, mean0, rstd0, *params[:5], *options, False, True,
                                                   "torch")
    for got, expected in zip(mixed, plain):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
@pytest.mark.parametrize("recompute", [False, True])
def test_opcheck(backend, recompute):
    x, *params = cast(make_inputs(6, 32, 8, lead=(2,)), torch.float32)
    args = (x, *params, "silu", "layernorm", 1e-5, recompute, backend)
    torch.library.opcheck(torch.ops.fastadapter.adapter_forward.default, args)
    y, h, mean, rstd = torch.ops.fastadapter.adapter_forward(*args)
    torch.library.opcheck(torch.ops.fastadapter.adapter_backward.default,
                          (torch.randn_like(y), x.detach(), h, mean, rstd, *[None if p is None else p.detach()
                                                                            for p in params[:5]],
                           "silu", "layernorm", 1e-5, recompute, True, backend))


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_torch_compile_fullgraph(backend):
    torch._dynamo.reset()
    module = fastadapter.Adapter(64, fastadapter.AdapterConfig(bottleneck=24, init="normal", backend=backend))

    def step(x):
        return (module(x) * torch.sin(x)).sum()

    x = torch.randn(2, 9, 64, requires_grad=True)
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    loss = compiled(x)
    loss.backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]
    x.grad = None
    module.zero_grad()
    expected = step(x)
    expected.backward()
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, [x.grad] + [p.grad for p in module.parameters()]):
        torch.testing.assert_close(got, want)


def test_inductor_compiles_through_the_op():
    torch._dynamo.reset()
    module = fastadapter.Adapter(32, fastadapter.AdapterConfig(bottleneck=8, init="normal", backend="cpu"))
    x = torch.randn(4, 32)
    compiled = torch.compile(lambda t: module(t).relu(), fullgraph=True)
    torch.testing.assert_close(compiled(x), module(x).relu())


@pytest.mark.parametrize("backend", BACKENDS)
def test_double_backward_is_refused_by_name(backend):
    leaves = cast(make_inputs(5, 16, 4), torch.float32)
    y = fastadapter.adapter(*leaves, backend=backend)
    with pytest.raises(NotImplementedError, match=r"double backward \(create_graph=True\) is not supported"):
        torch.autograd.grad((y ** 2).sum(), leaves[0], create_graph=True)
    (grad_x,) = torch.autograd.grad((y ** 2).sum(), leaves[0])  # a plain backward of the same graph still runs
    assert torch.isfinite(grad_x).all()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_input_grad_skipped_when_not_needed(backend):
    x, *params = cast(make_inputs(5, 32, 8), torch.float32)
    x.requires_grad_(False)
    y = fastadapter.adapter(x, *params, backend=backend)
    y.sum().backward()
    assert x.grad is None and all(p.grad is not None for p in params)


# bfloat16 is left to tests/test_gpu.py for Triton: the interpreter does not run it on CPU.
@pytest.mark.parametrize("backend,dtype", [(b, d) for b in BACKENDS for d in (torch.float32, torch.bfloat16)
                                           if b != "triton" or d == torch.float32])
def test_results_outlive_later_calls(backend, dtype):
    # On CPU the op's large tensors come from a caching allocator that hands freed blocks out again:
    # nothing still in use may be handed out. Like the layers of a model: every forward first, then every
    # backward, each checked as it comes.
    sizes = [(3000, 768, 256), (700, 768, 64), (3000, 768, 256), (9, 64, 32), (700, 768, 64)]
    if backend == "triton":
        sizes = [(30, 64, 32), (70, 64, 48), (30, 64, 32)]
    calls = []
    for tokens, width, r in sizes:
        inputs64 = make_inputs(tokens, width, r)
        leaves = cast(inputs64, dtype)
        calls.append((inputs64, leaves, fastadapter.adapter(*leaves, backend=backend)))
    for inputs64, leaves, y in calls:
        assert_matches_reference(y, leaves, inputs64, torch.randn_like(inputs64[0]), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_matches_training_forward(backend):
    # Without grad nothing is saved, so h becomes a temporary (the recompute path): same values.
    leaves = cast(make_inputs(33, 64, 24), torch.float32)
    with_grad = fastadapter.adapter(*leaves, backend=backend)
    with torch.no_grad():
        without_grad = fastadapter.adapter(*leaves, backend=backend)
    assert not without_grad.requires_grad
    torch.testing.assert_close(without_grad, with_grad.detach(), rtol=1e-6, atol=1e-6)


def test_release_cpu_cache():
    # 2000 x 768 float32 outputs are 6 MB: they come from the caching allocator, and go back to it when freed.
    x, *params = cast(make_inputs(2000, 768, 64), torch.float32, requires_grad=False)
    expected = reference.adapter(x, *params)
    y = fastadapter.adapter(x, *params, backend="cpu")
    del y
    assert fastadapter.release_cpu_cache() >= 2000 * 768 * 4
    assert fastadapter.release_cpu_cache() == 0
    torch.testing.assert_close(fastadapter.adapter(x, *params, backend="cpu"), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("limit,cached,warning", [("0", False, False), ("-5", True, True), ("12MB", True, True)])
def test_cpu_cache_limit_from_the_environment(limit, cached, warning):
    # The limit is read once per process, hence a fresh interpreter. 0 turns caching off; anything but a
    # whole number of MiB warns and keeps the default.
    script = ("import torch, fastadapter\n"
              "p = [torch.randn(64, 768), None, torch.ones(64), None, torch.randn(768, 64), None]\n"
              "fastadapter.adapter(torch.randn(2000, 768), *p, backend='cpu')\n"
              "print(fastadapter.release_cpu_cache())\n")
    env = {**os.environ, "FASTADAPTER_CPU_CACHE_MB": limit}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert (int(out.stdout.strip()) >= 2000 * 768 * 4) == cached
    assert (f"FASTADAPTER_CPU_CACHE_MB='{limit}' is not a non-negative whole number" in out.stderr) == warning


def test_cpu_cache_across_fork():
    # The cache's lock is held across fork() and released on both sides (pthread_atfork): a forked child
    # (a DataLoader worker, say) reuses the blocks it inherited and allocates new ones without deadlock.
    import multiprocessing

    x, *params = cast(make_inputs(2000, 768, 64), torch.float32, requires_grad=False)
    expected = reference.adapter(x, *params)
    kept = fastadapter.adapter(x, *params, backend="cpu")  # a live block the child inherits
    fastadapter.adapter(x, *params, backend="cpu")  # and a cached one (the output is dropped at once)
    results = multiprocessing.get_context("fork").SimpleQueue()

    def child():
        torch.set_num_threads(1)  # GNU OpenMP's thread pool does not survive fork
        y = fastadapter.adapter(x, *params, backend="cpu")
        results.put(bool(torch.allclose(y, expected, rtol=1e-5, atol=1e-5)) and
                    bool(torch.allclose(kept, expected, rtol=1e-5, atol=1e-5)))
        del y
        fastadapter.release_cpu_cache()

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join(timeout=60)
    if process.is_alive():
        process.kill()
        pytest.fail("the forked child hung (a lock left held across fork?)")
    assert process.exitcode == 0, "the forked child did not finish cleanly"
    assert results.get() is True


@pytest.mark.skipif(not _C.built_with_cuda(), reason="the CUDA part is not built here")
def test_cuda_packed_kernels_are_opt_in_and_taken_where_rows_split_into_packs():
    """The gate of the CUDA row-in-registers kernels (host code: runs wherever the CUDA part is built)."""
    with cuda_packed_rows(False):
        assert _C.cuda_packed_rows_chunks(256, 2, backward=False) == 0
    with cuda_packed_rows(True):
        assert [_C.cuda_packed_rows_chunks(r, 2, backward=False) for r in (8, 256, 512, 1024, 1032, 300)] == \
            [1, 1, 2, 4, 0, 0]
        assert [_C.cuda_packed_rows_chunks(r, 4, backward=True) for r in (20, 128, 256, 260)] == [1, 1, 2, 0]
        assert _C.cuda_packed_rows_chunks(128, 2, backward=True) == 1  # test_gpu's bf16 case
    assert _C.cuda_packed_rows_chunks(256, 2, backward=False) == 0  # off again after the block
    os.environ["FASTADAPTER_CUDA_PACKED_ROWS"] = "1"  # read at the first call only: no getenv per call
    try:
        assert _C.cuda_packed_rows_chunks(256, 2, backward=False) == 0
    finally:
        del os.environ["FASTADAPTER_CUDA_PACKED_ROWS"]


def test_eager_is_the_plain_pytorch_adapter_with_autograd():
    """backend="eager" is what a user writes in plain PyTorch: the reference itself, differentiable to any order."""
    leaves = cast(make_inputs(5, 16, 4), torch.float32)
    y = fastadapter.adapter(*leaves, backend="eager")
    assert torch.equal(y, reference.adapter(*leaves))
    (grad_x,) = torch.autograd.grad((y ** 2).sum(), leaves[0], create_graph=True)
    assert grad_x.requires_grad  # a second backward is possible


def test_python_backend_errors_keep_their_type():
    """An error raised inside a backend written in Python (torch) comes back through the op's C++ as itself."""
    x, *params = cast(make_inputs(5, 16, 4), torch.float32, requires_grad=False)
    y, h, mean, rstd = torch.ops.fastadapter.adapter_forward(x, *params, "gelu", "layernorm", 1e-5, False, "torch")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):  # backward's names reach the backend
        torch.ops.fastadapter.adapter_backward(y, x, h, mean, rstd, *params[:5], "swish", "layernorm", 1e-5,
                                               False, True, "torch")
