"""How much of a BLIP training step the adapters take, and so how far (c)/(b) can move at the model level.

    python benchmarks/step_share.py [--preset cpu|gpu] [--steps N] [--packed]

Trains `fastadapter bench`'s mode (c) (fused adapters in every tower, same model, batch and preset) and takes
N steps apart with torch.profiler: the time of the adapter op's forward and backward against the whole
step — on CPU their inclusive CPU time, on GPU the device time of the kernels they launch (the profiler
attributes each kernel to the op that launched it). If the op alone runs at a fraction f of eager's time,
(c)/(b) can be no lower than about 1 - share * (1/f - 1): that is the most a faster adapter buys a whole
step. The profiler slows every op a little, so the share is approximate. --packed turns on the CUDA
row-in-registers kernels (FASTADAPTER_CUDA_PACKED_ROWS=1).
"""

import argparse
import statistics

from torch.profiler import ProfilerActivity, profile

from fastadapter import bench
from fastadapter.bench.measure import timed_train_step
from fastadapter.ops.adapter.registration import set_cuda_packed_rows

OPS = ("fastadapter::adapter_forward", "fastadapter::adapter_backward")


def adapter_share(preset_name: str = "cpu", steps: int = 5) -> dict:
    preset = bench.PRESETS[preset_name]
    cuda = preset.device == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    model, batch, optimizer = bench.setup_mode(preset, "c")
    for _ in range(preset.warmup + 1):
        timed_train_step(model, batch, optimizer, preset.device)
    shares, step_s, op_ms, calls = [], [], {op: [] for op in OPS}, 0
    for _ in range(steps):
        with profile(activities=activities) as prof:
            seconds = timed_train_step(model, batch, optimizer, preset.device).seconds
        events = [e for e in prof.key_averages() if e.key in OPS]
        totals = {e.key: (e.device_time_total if cuda else e.cpu_time_total) / 1e3 for e in events}
        calls = events[0].count
        for op in OPS:
            op_ms[op].append(totals[op])
        step_s.append(seconds)
        shares.append(sum(totals.values()) / (seconds * 1e3))
    return {"step_s": statistics.median(step_s), "calls": calls, "time": "GPU kernel" if cuda else "CPU",
            "share": statistics.median(shares), "share_min": min(shares), "share_max": max(shares),
            **{f"{op.split('::')[1]}_ms": statistics.median(v) for op, v in op_ms.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(bench.PRESETS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--packed", action="store_true", help="FASTADAPTER_CUDA_PACKED_ROWS=1")
    args = parser.parse_args()
    if args.packed:
        set_cuda_packed_rows(True)
    r = adapter_share(args.preset, args.steps)
    print(f"preset {args.preset}{' (packed rows)' if args.packed else ''}, mode (c), median of {args.steps} "
          f"profiled steps: step {r['step_s'] * 1e3:.0f} ms; {r['time']} time of adapter_forward "
          f"{r['adapter_forward_ms']:.1f} ms, adapter_backward {r['adapter_backward_ms']:.1f} ms ({r['calls']} calls "
          f"each); the adapters' share of the step {r['share']:.3f} [{r['share_min']:.3f}–{r['share_max']:.3f}]")
    for f in (0.9, 0.8, 0.5):
        print(f"an op at {f:.1f}x eager's time gives (c)/(b) >= {1 - r['share'] * (1 / f - 1):.3f}")


if __name__ == "__main__":
    main()
