"""The `fastadapter` command."""

from __future__ import annotations

import argparse
import sys


def _backends(args) -> int:
    from . import backends

    for name, info in backends().items():
        print(f"{name:7s} {'yes' if info.available else 'no ':4s} {info.reason}")
    return 0


def _demo(args) -> int:
    from . import demo

    demo.run(steps=args.steps, batch_size=args.batch, image_size=args.image_size, bottleneck=args.bottleneck)
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastadapter", description="Fused adapter fine-tuning for BLIP.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="which kernel backends are built and usable here").set_defaults(run=_backends)
    demo = commands.add_parser("demo", help="train BLIP-base adapters for a few steps: eager against fused")
    demo.add_argument("--steps", type=int, default=3, help="timed training steps per mode (default 3)")
    demo.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    demo.add_argument("--image-size", type=int, default=384, help="image side in pixels (default 384)")
    demo.add_argument("--bottleneck", type=int, default=256, help="adapter bottleneck r (default 256)")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "image_size", "bottleneck"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
