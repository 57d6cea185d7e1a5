"""The ITM issue's CPU targets for fastadapter.itm_margin_loss (forward+backward) and
fastadapter.sample_hard_negatives at N = 16384 pairs:

    python benchmarks/itm_targets.py [--n 16384] [--width 256] [--repeats 3] [--json FILE]

float32 features of BLIP's projection width (256), a few captions per image (ids):
- memory: peak RSS growth over one call, each op and path in a fresh process (VmHWM), target <= 0.02x the eager
  path's (the N x N similarities, hinge terms and softmaxes that BLIP's code materialises);
- time: fused (the cpu backend) against eager, interleaved in one process (a figure, not a target).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

import fastadapter
from fastadapter.bench import measure

TARGET = 0.02
OPS = ("margin", "sampler")


def _inputs(n, width):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(n, width, generator=g).requires_grad_()
    text = torch.randn(n, width, generator=g).requires_grad_()
    ids = torch.arange(n) // 4  # four captions per image id, as a captioning dataset's batches have
    return image, text, ids


def step(op, backend, image, text, ids):
    if op == "margin":
        loss = fastadapter.itm_margin_loss(image, text, image_ids=ids, text_ids=ids, backend=backend)
        return torch.autograd.grad(loss, (image, text))
    return fastadapter.sample_hard_negatives(image.detach(), text.detach(), 0.07, ids, ids,
                                             generator=torch.Generator().manual_seed(1), backend=backend)


def peak_growth(op, backend, n, width) -> float:
    torch.set_flush_denormal(True)
    args = _inputs(n, width)
    step(op, backend, *args)  # warm
    return measure.peak_rss_growth(lambda: step(op, backend, *args))[0]


def fresh_process(op, backend, n, width) -> float:
    out = subprocess.run([sys.executable, __file__, "--rss", op, backend, "--n", str(n), "--width", str(width)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def measure_targets(n, width, repeats) -> dict[str, float]:
    torch.set_flush_denormal(True)
    args = _inputs(n, width)
    results = {}
    for op in OPS:
        t = measure.interleaved_medians({b: (lambda b=b: step(op, b, *args)) for b in ("eager", "cpu")},
                                        repeats=repeats, warmup=1)
        rss = {b: fresh_process(op, b, n, width) for b in ("eager", "cpu")}
        results.update({f"{op} peak RSS growth fused/eager": rss["cpu"] / rss["eager"],
                        f"{op} time fused/eager": t["cpu"] / t["eager"],
                        f"{op} eager ms": 1e3 * t["eager"], f"{op} fused ms": 1e3 * t["cpu"],
                        f"{op} eager peak RSS growth MiB": rss["eager"] / 2**20,
                        f"{op} fused peak RSS growth MiB": rss["cpu"] / 2**20})
    return results


def _unit(name):
    return "ms" if name.endswith("ms") else "MiB" if name.endswith("MiB") else "x"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write a result record (benchmarks/result_file.py) here")
    parser.add_argument("--rss", nargs=2, help=argparse.SUPPRESS)  # internal: one op and backend, in this process
    args = parser.parse_args()
    if args.rss:
        print(json.dumps(peak_growth(*args.rss, args.n, args.width)))
        return
    results = measure_targets(args.n, args.width, args.repeats)
    targets = {name: TARGET for name in results if "RSS growth fused/eager" in name}
    for name, value in results.items():
        target = targets.get(name)
        print(f"{name:36s} {value:12.4f}" + (f"  target <= {target}: {'met' if value <= target else 'MISSED'}"
                                             if target else ""))
    if args.json:
        import result_file

        figures = [result_file.figure(k, round(v, 4), _unit(k)) for k, v in results.items()]
        met = all(results[k] <= v for k, v in targets.items())
        result_file.write(result_file.record(
            f"itm_margin_loss (fwd+bwd) and sample_hard_negatives, CPU, N={args.n} d={args.width} float32, "
            "fused vs eager", "python benchmarks/" + " ".join(["itm_targets.py", *sys.argv[1:]]), figures,
            "fused meets both memory targets" if met else "fused misses a memory target"), args.json)


if __name__ == "__main__":
    main()
