"""The ITM ops on the GPU (benchmarks/gpu/run.sh): itm_margin_loss forward+backward and sample_hard_negatives at
N = 16384, d = 256, bfloat16, each fused backend against eager (materialised), extra memory and time.

    python benchmarks/itm_gpu.py [--backends triton,cuda] [--json FILE]
"""

from __future__ import annotations

import argparse
import sys

import torch
import triton.testing

import fastadapter
from fastadapter.bench import measure

N, D = 16384, 256


def _inputs():
    g = torch.Generator(device="cuda").manual_seed(0)
    image = torch.randn(N, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    text = torch.randn(N, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    ids = torch.arange(N, device="cuda") // 4
    return image, text, ids


def margin(backend, image, text, ids):
    loss = fastadapter.itm_margin_loss(image, text, image_ids=ids, text_ids=ids, backend=backend)
    return torch.autograd.grad(loss, (image, text))


def sampler(backend, image, text, ids):
    return fastadapter.sample_hard_negatives(image.detach(), text.detach(), 0.07, ids, ids, backend=backend)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="triton,cuda")
    parser.add_argument("--json", help="also write a result record (benchmarks/result_file.py) here")
    args = parser.parse_args()
    inputs = _inputs()
    figures = []
    for op in (margin, sampler):
        results = {}
        for backend in ["eager", *args.backends.split(",")]:
            def fn(op=op, backend=backend):
                return op(backend, *inputs)

            results[backend] = (triton.testing.do_bench(fn, warmup=3, rep=30), measure.cuda_extra_memory(fn))
        for backend, (ms, memory) in results.items():
            ratio = ms / results["eager"][0]
            print(f"{op.__name__} {backend}: {ms:.3f} ms ({ratio:.3f}x eager), extra {memory / 2**20:.1f} MiB")
            figures += [_figure(f"{op.__name__} {backend} ms", round(ms, 3), "ms"),
                        _figure(f"{op.__name__} {backend} extra MiB", round(memory / 2**20, 1), "MiB")]
            if backend != "eager":
                figures.append(_figure(f"{op.__name__} {backend}/eager time", round(ratio, 3), "x"))
    if args.json:
        import result_file

        result_file.write(result_file.record(
            f"itm_margin_loss (fwd+bwd) and sample_hard_negatives, GPU bf16, N={N} d={D}: fused vs eager",
            "python benchmarks/" + " ".join(["itm_gpu.py", *sys.argv[1:]]), figures, "measured"), args.json)


def _figure(name, value, unit):
    import result_file

    return result_file.figure(name, value, unit)


if __name__ == "__main__":
    main()
