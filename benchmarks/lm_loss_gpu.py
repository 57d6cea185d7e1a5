"""The LM-loss issue's GPU target for fastadapter.lm_loss (benchmarks/gpu/run.sh): bf16, BLIP's vocabulary
(30524), width 768, 32 x 40 tokens, label smoothing 0.1, the head frozen; forward+backward time against eager
(F.cross_entropy on F.linear), target <= 1.0x, and beside them Liger-Kernel's fused linear cross entropy where
the liger-kernel package imports; extra memory over the inputs for each.

    python benchmarks/lm_loss_gpu.py [--json FILE]
"""

from __future__ import annotations

import argparse
import sys

import torch
import triton.testing

import fastadapter
from fastadapter.bench import measure

VOCAB, WIDTH, TOKENS = 30524, 768, 32 * 40


def _inputs():
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(TOKENS, WIDTH, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    weight = torch.randn(VOCAB, WIDTH, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
    labels = torch.randint(0, VOCAB, (TOKENS,), device="cuda", generator=g)
    return hidden, weight, torch.zeros(VOCAB, device="cuda", dtype=torch.bfloat16), labels


def steps():
    hidden, weight, bias, labels = _inputs()
    fns = {name: (lambda backend=name: torch.autograd.grad(
        fastadapter.lm_loss(hidden, weight, bias, labels, 0.1, backend=backend), hidden))
           for name in ("eager", "triton", "torch")}
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss(label_smoothing=0.1)
        fns["liger"] = lambda: torch.autograd.grad(liger(weight, hidden, labels, bias), hidden)
    except ImportError:
        pass
    return fns


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write a result record (benchmarks/result_file.py) here")
    args = parser.parse_args()
    fns = steps()
    ms, mib = {}, {}
    for name, fn in fns.items():
        try:
            ms[name], mib[name] = triton.testing.do_bench(fn, warmup=5, rep=50), measure.cuda_extra_memory(fn) / 2**20
        except Exception as error:  # another package's API (Liger) must not cost the others' figures
            if name in ("eager", "triton"):
                raise
            print(f"{name}: failed ({type(error).__name__}: {error})")
    fns = {name: fn for name, fn in fns.items() if name in ms}
    for name in fns:
        print(f"{name}: {ms[name]:.3f} ms, {mib[name]:.1f} MiB extra")
    ratio = ms["triton"] / ms["eager"]  # auto's choice on a GPU
    print(f"fused/eager: {ratio:.3f} (triton; target <= 1.0: {'met' if ratio <= 1 else 'MISSED'})")
    if "torch" in ms:
        print(f"torch backend/eager: {ms['torch'] / ms['eager']:.3f}")
    if "liger" in ms:
        print(f"fused/liger: {ms['triton'] / ms['liger']:.3f} (target <= 1.0)")
    if "liger" not in fns:
        print("Liger-Kernel: the liger-kernel package is not installed here; not measured")
    if args.json:
        import result_file

        figures = [result_file.figure("fused/eager time", round(ratio, 3))]
        if "liger" in ms:
            figures.append(result_file.figure("fused/liger time", round(ms["triton"] / ms["liger"], 3)))
        figures += [result_file.figure(f"{k} ms", round(v, 3), "ms") for k, v in ms.items()]
        figures += [result_file.figure(f"{k} extra MiB", round(v, 1), "MiB") for k, v in mib.items()]
        result_file.write(result_file.record(
            f"lm_loss, GPU bf16, T={TOKENS} V={VOCAB} H={WIDTH}, frozen head: fused vs eager",
            "python benchmarks/" + " ".join(["lm_loss_gpu.py", *sys.argv[1:]]), figures,
            "fused meets the target" if ratio <= 1 else "fused misses the target"), args.json)


if __name__ == "__main__":
    main()
