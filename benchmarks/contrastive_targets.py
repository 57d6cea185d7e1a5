"""The ITC issue's CPU targets for fastadapter.itc_loss, forward+backward, float32.

    python benchmarks/contrastive_targets.py [--n 16384] [--d 256] [--repeats 3] [--json FILE]
    python benchmarks/contrastive_targets.py --scaling [--plot FILE.png] [--json FILE]

- time: fused (the cpu backend) against eager (the materialised N x N loss with autograd), interleaved in one
  process, with the floor beside it: four N x N x d GEMMs and 2 N^2 exponentials at this machine's measured rates;
- peak RSS growth over the call, fused and eager each in a fresh process (per-thread accumulators included);
- --scaling: time and peak RSS growth against N in {1k, 4k, 16k, 64k}, eager only where it fits in memory, and a
  PNG of both (the picture: flat memory for fused, quadratic for eager).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch

import fastadapter
from fastadapter.bench import measure

TARGETS = {"time fused/eager": 0.3, "peak RSS growth fused/eager": 0.02}
SCALING_N = (1024, 4096, 16384, 65536)


def _inputs(n, d):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(n, d, generator=g).requires_grad_()
    text = torch.randn(n, d, generator=g).requires_grad_()
    return image, text, torch.tensor(0.07, requires_grad=True)


def step(backend, image, text, tau):
    """One forward+backward of BLIP's symmetric ITC loss; the grads go to the features and the temperature."""
    loss = fastadapter.itc_loss(image, text, tau, backend=backend)
    return torch.autograd.grad(loss, (image, text, tau))


def floor_seconds(n, d, repeats=20) -> float:
    """Four N x N x d GEMMs and 2 N^2 exps at the rates a cache-resident 1024 x 512 tile measures here (all
    threads): the least this machine can spend on that work."""
    a, b = torch.randn(1024, d), torch.randn(512, d)
    c = a @ b.t()
    rates = measure.interleaved_medians({"gemm": lambda: torch.mm(a, b.t(), out=c), "exp": lambda: torch.exp(c, out=c)},
                                        repeats=repeats)
    scale = n * n / (1024 * 512)
    return 4 * rates["gemm"] * scale + 2 * rates["exp"] * scale


def peak_growth(backend, n, d) -> tuple[float, float]:
    """(peak RSS growth in bytes, seconds) of one step in this process; call it in a fresh one."""
    torch.set_flush_denormal(True)
    image, text, tau = _inputs(n, d)
    step(backend, image, text, tau)  # warm: kernels, thread pools and the allocator's first touch
    return measure.peak_rss_growth(lambda: step(backend, image, text, tau))


def fresh_process(backend, n, d) -> tuple[float, float]:
    out = subprocess.run([sys.executable, __file__, "--rss", backend, "--n", str(n), "--d", str(d)], check=True,
                         capture_output=True, text=True).stdout
    growth, seconds = json.loads(out.strip().splitlines()[-1])
    return growth, seconds


def interleaved(n, d, repeats) -> dict[str, float]:
    torch.set_flush_denormal(True)
    image, text, tau = _inputs(n, d)
    return measure.interleaved_medians({"eager": lambda: step("eager", image, text, tau),
                                        "fused": lambda: step("cpu", image, text, tau)}, repeats=repeats, warmup=1)


def measure_targets(n, d, repeats) -> dict[str, float]:
    t = interleaved(n, d, repeats)
    floor = floor_seconds(n, d)
    rss = {name: fresh_process(name, n, d)[0] for name in ("eager", "cpu")}
    return {"time fused/eager": t["fused"] / t["eager"], "peak RSS growth fused/eager": rss["cpu"] / rss["eager"],
            "time fused/floor": t["fused"] / floor, "eager s": t["eager"], "fused s": t["fused"], "floor s": floor,
            "eager peak RSS growth MiB": rss["eager"] / 2**20, "fused peak RSS growth MiB": rss["cpu"] / 2**20}


def scaling(d, eager_max_n=16384) -> list[dict]:
    rows = []
    for n in SCALING_N:
        for backend in ("cpu", "eager"):
            if backend == "eager" and n > eager_max_n:
                continue  # 64k: each N x N float32 matrix is 16 GiB
            growth, seconds = fresh_process(backend, n, d)
            rows.append({"n": n, "backend": backend, "seconds": seconds, "peak_rss_growth_mib": growth / 2**20})
            print(rows[-1], flush=True)
    return rows


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for backend, label in (("cpu", "fused (cpu)"), ("eager", "eager PyTorch")):
        pts = [r for r in rows if r["backend"] == backend]
        axes[0].plot([r["n"] for r in pts], [r["seconds"] for r in pts], "o-", label=label)
        axes[1].plot([r["n"] for r in pts], [r["peak_rss_growth_mib"] for r in pts], "o-", label=label)
    for ax, what in zip(axes, ("forward+backward seconds", "peak RSS growth (MiB)")):
        ax.set_xscale("log", base=2)
        if "MiB" in what:  # growth may be 0 (freed memory reused): linear near 0, log above
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set_ylim(0, 3 * max(r["peak_rss_growth_mib"] for r in rows))
        else:
            ax.set_yscale("log")
        ax.set_xlabel("N (images = texts), d = 256, float32")
        ax.set_ylabel(what)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(f"itc_loss on CPU ({torch.get_num_threads()} threads)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_record(results, args):
    import result_file

    names = ("time fused/eager", "time fused/floor", "peak RSS growth fused/eager", "eager s", "fused s", "floor s")
    figures = [result_file.figure(name, round(results[name], 4), "s" if name.endswith(" s") else "x")
               for name in names]
    met = all(results[k] <= v for k, v in TARGETS.items())
    result_file.write(result_file.record(
        f"itc_loss, CPU, N={args.n} d={args.d} float32, fwd+bwd: fused vs eager",
        "python benchmarks/" + " ".join(["contrastive_targets.py", *sys.argv[1:]]), figures,
        "fused meets both targets" if met else "fused misses a target"), args.json)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--d", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write a result record (benchmarks/result_file.py) here")
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--plot", default="benchmarks/results/contrastive_scaling.png")
    parser.add_argument("--rss", help=argparse.SUPPRESS)  # internal: one step of this backend, in this process
    args = parser.parse_args()
    if args.rss:
        print(json.dumps(peak_growth(args.rss, args.n, args.d)))
        return
    if args.scaling:
        rows = scaling(args.d)
        plot(rows, args.plot)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(rows, f, indent=1)
        return
    results = measure_targets(args.n, args.d, args.repeats)
    for name, value in results.items():
        target = TARGETS.get(name)
        print(f"{name:32s} {value:10.4f}" + (f"  target <= {target}: {'met' if value <= target else 'MISSED'}"
                                             if target else ""))
    if args.json:
        write_record(results, args)


if __name__ == "__main__":
    main()
