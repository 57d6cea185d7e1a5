"""The foundation issue's targets for the adapter op on CPU, measured in one process, interleaved.

    python benchmarks/adapter_targets.py [--tokens 8192] [--repeats 15]

float32, width 768, bottleneck 256. Reports, each as a ratio against eager PyTorch (the plain adapter with
autograd) measured in the same run: forward+backward time, inference forward time, and bytes saved for
backward (parameters excluded), with and without recompute; and fused time against the GEMM-only floor
(the six GEMMs of the same shapes).
"""

from __future__ import annotations

import argparse
import datetime
import platform

import roofline
import torch

import fastadapter
from fastadapter.bench import measure

TARGETS = {"fwd+bwd fused/eager": 0.85, "fwd+bwd fused/GEMM floor": 1.10, "inference fused/eager": 0.90,
           "saved bytes fused/eager": 0.67, "saved bytes recompute/eager": 0.51}


def measure_targets(tokens=8192, width=768, r=256, repeats=15, backend="cpu") -> dict[str, float]:
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    config = fastadapter.AdapterConfig(bottleneck=r, init="normal")
    eager = fastadapter.Adapter(width, config.replace(backend="eager"))
    fused = fastadapter.Adapter(width, config.replace(backend=backend))
    lean = fastadapter.Adapter(width, config.replace(backend=backend, recompute=True))
    fused.load_state_dict(eager.state_dict())
    lean.load_state_dict(eager.state_dict())
    x = torch.randn(tokens, width, requires_grad=True)
    grad = torch.randn(tokens, width)
    six_gemms = roofline.adapter_gemms("forward_backward", tokens, width, r, "cpu", torch.float32)

    def training(module):  # x stands for an activation: its grad flows on, nothing accumulates
        inputs = [x, *module.parameters()]
        return lambda: torch.autograd.grad(module(x), inputs, grad)

    def inference(module):
        def run():
            with torch.no_grad():
                module(x)
        return run

    t = measure.interleaved_medians({"eager": training(eager), "fused": training(fused), "gemm": six_gemms},
                                    repeats=repeats)
    i = measure.interleaved_medians({"eager": inference(eager), "fused": inference(fused)}, repeats=repeats)
    saved = {name: measure.saved_bytes(lambda: m(x), exclude=m.parameters())[0]
             for name, m in (("eager", eager), ("fused", fused), ("recompute", lean))}
    return {
        "fwd+bwd fused/eager": t["fused"] / t["eager"],
        "fwd+bwd fused/GEMM floor": t["fused"] / t["gemm"],
        "fwd+bwd eager/GEMM floor": t["eager"] / t["gemm"],
        "inference fused/eager": i["fused"] / i["eager"],
        "saved bytes fused/eager": saved["fused"] / saved["eager"],
        "saved bytes recompute/eager": saved["recompute"] / saved["eager"],
        "eager fwd+bwd ms": 1e3 * t["eager"], "fused fwd+bwd ms": 1e3 * t["fused"], "GEMM floor ms": 1e3 * t["gemm"],
        "eager inference ms": 1e3 * i["eager"], "fused inference ms": 1e3 * i["fused"],
        "eager saved MiB": saved["eager"] / 2**20, "fused saved MiB": saved["fused"] / 2**20,
        "recompute saved MiB": saved["recompute"] / 2**20,
    }


def markdown(results: dict[str, float]) -> str:
    lines = ["| measure | value | target | met |", "|---|---:|---:|:---:|"]
    for name, value in results.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else ("yes" if value <= target else "**no**")
        lines.append(f"| {name} | {value:.3f} | {'' if target is None else f'≤ {target}'} | {verdict} |")
    return "\n".join(lines)


def write_record(results: dict[str, float], args) -> None:
    import sys

    import result_file

    names = ("fwd+bwd fused/eager", "inference fused/eager", "fwd+bwd fused/GEMM floor", "saved bytes fused/eager")
    figures = [result_file.figure(name, round(results[name], 3)) for name in names]
    wins = results["fwd+bwd fused/eager"] < 1
    verdict = "fused wins" if wins else "fused does not win on time"
    result_file.write(result_file.record(f"adapter op, CPU, T={args.tokens} D=768 r=256 float32: fused vs eager",
                                         "python benchmarks/" + " ".join(["adapter_targets.py", *sys.argv[1:]]),
                                         figures, verdict), args.json)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--json", help="also write the run as a result record (benchmarks/result_file.py) here")
    args = parser.parse_args()
    results = measure_targets(tokens=args.tokens, repeats=args.repeats)
    if args.json:
        write_record(results, args)
    print(f"{datetime.date.today()} · {platform.processor() or platform.machine()} · {torch.get_num_threads()} "
          f"threads · torch {torch.__version__} · fastadapter cpu backend: {fastadapter.backends()['cpu'].reason}")
    print(f"T={args.tokens}, D=768, r=256, float32, medians of {args.repeats} interleaved runs\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
