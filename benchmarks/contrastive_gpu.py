"""The ITC issue's GPU targets for fastadapter.itc_loss, forward+backward, bfloat16 (benchmarks/gpu/run.sh).

    python benchmarks/contrastive_gpu.py [--backend triton] [--json FILE]

- N = 65536, d = 256: extra memory over the inputs (peak allocated minus allocated before), target < 1 GiB;
- N = 16384: time against eager PyTorch (the materialised loss), target <= 1.0x, and beside them Inf-CL's
  cal_inf_loss (two calls, one per direction) where the inf-cl package imports.
"""

from __future__ import annotations

import argparse
import sys

import torch
import triton.testing

import fastadapter

D = 256


def _inputs(n):
    g = torch.Generator(device="cuda").manual_seed(0)
    image = torch.randn(n, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    text = torch.randn(n, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    return image, text, torch.tensor(0.07, device="cuda", requires_grad=True)


def step(backend, image, text, tau):
    loss = fastadapter.itc_loss(image, text, tau, backend=backend)
    return torch.autograd.grad(loss, (image, text, tau))


def inf_cl_step():
    try:
        from inf_cl import cal_inf_loss
    except ImportError:
        return None

    def run(image, text, tau):
        image_n, text_n = torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)
        labels = torch.arange(image.shape[0], device="cuda")
        loss = 0.5 * (cal_inf_loss(image_n, text_n, labels=labels, scale=1 / tau).mean()
                      + cal_inf_loss(text_n, image_n, labels=labels, scale=1 / tau).mean())
        return torch.autograd.grad(loss, (image, text))

    return run


def extra_memory(backend, n) -> int:
    image, text, tau = _inputs(n)
    step(backend, image, text, tau)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step(backend, image, text, tau)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def times(backend, n) -> dict[str, float]:
    image, text, tau = _inputs(n)
    fns = {"eager": lambda: step("eager", image, text, tau), "fused": lambda: step(backend, image, text, tau)}
    inf_cl = inf_cl_step()
    if inf_cl is not None:
        fns["inf-cl"] = lambda: inf_cl(image, text, tau)
    return {name: triton.testing.do_bench(fn, warmup=5, rep=50) for name, fn in fns.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="triton")
    parser.add_argument("--json", help="also write a result record (benchmarks/result_file.py) here")
    args = parser.parse_args()
    memory = extra_memory(args.backend, 65536)
    ms = times(args.backend, 16384)
    print(f"N=65536 extra memory: {memory / 2**30:.3f} GiB (target < 1 GiB: {'met' if memory < 2**30 else 'MISSED'})")
    for name, value in ms.items():
        print(f"N=16384 {name}: {value:.3f} ms")
    ratio = ms["fused"] / ms["eager"]
    print(f"N=16384 fused/eager: {ratio:.3f} (target <= 1.0: {'met' if ratio <= 1 else 'MISSED'})")
    if "inf-cl" not in ms:
        print("Inf-CL: the inf-cl package is not installed here; not measured")
    if args.json:
        import result_file

        figures = [result_file.figure("N=65536 extra GiB", round(memory / 2**30, 4), "GiB"),
                   result_file.figure("N=16384 fused/eager", round(ratio, 3))]
        figures += [result_file.figure(f"N=16384 {k} ms", round(v, 3), "ms") for k, v in ms.items()]
        met = memory < 2**30 and ratio <= 1
        result_file.write(result_file.record(
            f"itc_loss, GPU bf16, d={D}: {args.backend} vs eager",
            "python benchmarks/" + " ".join(["contrastive_gpu.py", *sys.argv[1:]]), figures,
            "fused meets both targets" if met else "fused misses a target"), args.json)


if __name__ == "__main__":
    main()
