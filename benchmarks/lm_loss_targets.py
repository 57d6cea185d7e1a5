"""The LM-loss issue's CPU targets for fastadapter.lm_loss at BLIP's captioning shapes, forward+backward.

    python benchmarks/lm_loss_targets.py [--tokens 1280] [--repeats 5] [--json FILE]

V = 30524 (BLIP's vocabulary), H = 768, T = 32 x 40 tokens, float32, label smoothing 0.1, the head frozen as in
adapter training (hidden gets the only gradient):
- time: fused (the cpu backend) against eager (F.cross_entropy on F.linear's full logits), interleaved;
- extra memory: peak RSS growth over the step, each in a fresh process (VmHWM), target <= 0.1x eager's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

import fastadapter
from fastadapter.bench import measure

VOCAB, WIDTH = 30524, 768
TARGETS = {"time fused/eager": 1.0, "peak RSS growth fused/eager": 0.1}


def _inputs(tokens):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(tokens, WIDTH, generator=g).requires_grad_()
    weight = torch.randn(VOCAB, WIDTH, generator=g) * 0.02
    bias = torch.zeros(VOCAB)
    labels = torch.randint(0, VOCAB, (tokens,), generator=g)
    labels[::9] = -100
    return hidden, weight, bias, labels


def step(backend, hidden, weight, bias, labels):
    loss = fastadapter.lm_loss(hidden, weight, bias, labels, label_smoothing=0.1, backend=backend)
    return torch.autograd.grad(loss, hidden)


def peak_growth(backend, tokens) -> float:
    torch.set_flush_denormal(True)
    args = _inputs(tokens)
    step(backend, *args)  # warm
    return measure.peak_rss_growth(lambda: step(backend, *args))[0]


def fresh_process(backend, tokens) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss", backend, "--tokens", str(tokens)], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_targets(tokens, repeats) -> dict[str, float]:
    torch.set_flush_denormal(True)
    args = _inputs(tokens)
    t = measure.interleaved_medians({"eager": lambda: step("eager", *args), "fused": lambda: step("cpu", *args)},
                                    repeats=repeats)
    rss = {name: fresh_process(name, tokens) for name in ("eager", "cpu")}
    return {"time fused/eager": t["fused"] / t["eager"], "peak RSS growth fused/eager": rss["cpu"] / rss["eager"],
            "eager ms": 1e3 * t["eager"], "fused ms": 1e3 * t["fused"],
            "eager peak RSS growth MiB": rss["eager"] / 2**20, "fused peak RSS growth MiB": rss["cpu"] / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32 * 40)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write a result record (benchmarks/result_file.py) here")
    parser.add_argument("--rss", help=argparse.SUPPRESS)  # internal: one step of this backend, in this process
    args = parser.parse_args()
    if args.rss:
        print(json.dumps(peak_growth(args.rss, args.tokens)))
        return
    results = measure_targets(args.tokens, args.repeats)
    for name, value in results.items():
        target = TARGETS.get(name)
        print(f"{name:30s} {value:10.4f}" + (f"  target <= {target}: {'met' if value <= target else 'MISSED'}"
                                             if target else ""))
    if args.json:
        import result_file

        figures = [result_file.figure(k, round(v, 4), "ms" if k.endswith("ms") else "MiB" if k.endswith("MiB")
                                      else "x") for k, v in results.items()]
        met = all(results[k] <= v for k, v in TARGETS.items())
        result_file.write(result_file.record(
            f"lm_loss, CPU, T={args.tokens} V={VOCAB} H={WIDTH} float32, frozen head, fwd+bwd: fused vs eager",
            "python benchmarks/" + " ".join(["lm_loss_targets.py", *sys.argv[1:]]), figures,
            "fused meets both targets" if met else "fused misses a target"), args.json)


if __name__ == "__main__":
    main()
