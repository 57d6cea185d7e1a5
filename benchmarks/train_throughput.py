"""The training issue's throughput figure: a `fastadapter train --model base` epoch's images/s with the fused ops
against the same run with every op eager (`--eager`: eager adapters, Hugging Face's losses, eager ITC/sampler),
paired in one process: the two runs' epochs interleaved (order alternating), the first pair a warm-up.

    python benchmarks/train_throughput.py [--task captioning] [--images 16] [--pairs 2] [--json FILE]

BLIP-base shapes with random weights, 384 px, on the built-in synthetic set (its train split); float32 on CPU,
bf16 autocast on GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from fastadapter.train import synthetic, trainer


def measure(task: str, images: int, pairs: int, batch_size: int) -> dict:
    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = synthetic.write_folder(Path(tmp) / "data", images=images, image_size=64)
        runs = {name: trainer.Run(trainer.TrainOptions(model="base", data=str(folder), task=task, workers=0,
                                                       batch_size=batch_size, out=str(Path(tmp) / name),
                                                       eager=name == "eager"))
                for name in ("fused", "eager")}
        speeds = {name: [] for name in runs}
        for pair in range(pairs + 1):
            order = ("fused", "eager") if pair % 2 == 0 else ("eager", "fused")
            for name in order:
                speed = trainer.train_epoch(runs[name], pair + 1)["images_per_s"]
                if pair > 0:  # the first pair warms both
                    speeds[name].append(speed)
        samples = len(runs["fused"].folder.split("train"))
    ratios = [f / e for f, e in zip(speeds["fused"], speeds["eager"])]
    return {"images/s fused/eager, paired median": statistics.median(ratios),
            "fused images/s": statistics.median(speeds["fused"]), "eager images/s": statistics.median(speeds["eager"]),
            "pairs": len(ratios), "train samples per epoch": samples}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="captioning", choices=("captioning", "retrieval", "paper"))
    parser.add_argument("--images", type=int, default=16, help="synthetic images (80%% train, 2 captions each)")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--json", help="also write a result record (benchmarks/result_file.py) here")
    args = parser.parse_args()
    results = measure(args.task, args.images, args.pairs, args.batch_size)
    for name, value in results.items():
        print(f"{name:40s} {value:.4f}" if isinstance(value, float) else f"{name:40s} {value}")
    if args.json:
        import result_file

        ratio = results["images/s fused/eager, paired median"]
        figures = [result_file.figure(k, round(v, 4), "x" if "fused/eager" in k else "" if "images/s" not in k
                                      else "img/s", better="higher") for k, v in results.items()]
        result_file.write(result_file.record(
            f"fastadapter train --model base --task {args.task}: an epoch's images/s, fused ops vs every op eager",
            "python benchmarks/" + " ".join(["train_throughput.py", *sys.argv[1:]]), figures,
            "fused faster" if ratio > 1 else "fused not faster"), args.json)


if __name__ == "__main__":
    main()
