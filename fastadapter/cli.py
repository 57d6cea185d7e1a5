"""The `fastadapter` command."""

from __future__ import annotations

import argparse
import sys


def _backends(args) -> int:
    from .ops.registry import backends, ops

    for name, info in backends().items():
        print(f"{name:7s} {'yes' if info.available else 'no ':4s} {info.reason}")
    for op in ops():
        print(f"\nop {op}:")
        for name, info in backends(op).items():
            print(f"  {name:7s} {'yes' if info.available else 'no ':4s} {info.reason}")
    return 0


def _demo(args) -> int:
    from .bench import demo

    demo.run(steps=args.steps, batch_size=args.batch, image_size=args.image_size, bottleneck=args.bottleneck)
    return 0


def _bench(args) -> int:
    from . import bench

    modes = [m.strip() for m in args.modes.split(",")] if args.modes else None
    try:
        pairs = bench.parse_pairs(args.pairs) if args.pairs is not None else None
        report = bench.run(args.preset, modes, checkpoint=args.model, out_dir=args.out, pairs=pairs, batch=args.batch,
                           image_size=args.image_size, steps=args.steps, warmup=args.warmup,
                           bottleneck=args.bottleneck)
    except (ValueError, FileNotFoundError) as error:  # a request that cannot run here, refused before any mode
        print(error, file=sys.stderr)
        return 2
    failed = bench.failures(report)
    if failed:
        print(f"fastadapter bench: {', '.join(failed)} failed (the others are measured above)", file=sys.stderr)
    return 1 if failed else 0


def _train(args) -> int:
    from .train import data, trainer

    try:
        epochs = tuple(int(e) for e in args.save_epochs.split(",") if e.strip())
    except ValueError:
        print(f"fastadapter train: --save-epochs must be comma-separated integers, got {args.save_epochs!r}",
              file=sys.stderr)
        return 2
    opts = trainer.TrainOptions(
        model=args.model, data=args.data, task=args.task, epochs=args.epochs, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, out=args.out, save_epochs=epochs, resume=args.resume, seed=args.seed,
        workers=args.workers, caption_column=args.caption_column, on_bad_sample=args.on_bad_sample,
        prompt=args.prompt, bottleneck=args.bottleneck, itm=args.itm, full_finetune=args.full_finetune,
        eager=args.eager, train_heads=args.train_heads, distill=args.distill)
    try:
        trainer.train(opts)
    except (data.BadSampleError, FileNotFoundError, ValueError) as error:
        print(f"fastadapter train: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fastadapter train: interrupted; the checkpoints in {args.out}/checkpoints are whole: continue with "
              "--resume", file=sys.stderr)
        return 130
    return 0


def _add_train(commands):
    from .train.trainer import DEFAULT_SAVE_EPOCHS, TrainOptions

    d = TrainOptions()
    train = commands.add_parser("train", help="train adapters on an image-caption folder (default: a tiny BLIP on "
                                "the built-in synthetic set, offline)")
    train.add_argument("--model", default=d.model, help="tiny | base (random weights, from --seed) | a checkpoint "
                       "folder (default tiny)")
    train.add_argument("--data", help="an image-caption folder (metadata.jsonl/csv); default: the synthetic set")
    train.add_argument("--task", choices=("captioning", "retrieval", "paper"), default=d.task,
                       help="paper: ITC + ITM + LM on one shared vision encoder, adapters in all three towers "
                       "(--model RETRIEVAL,CAPTIONING for checkpoints)")
    train.add_argument("--epochs", type=int, default=d.epochs)
    train.add_argument("--batch-size", type=int, default=d.batch_size)
    train.add_argument("--grad-accum", type=int, default=d.grad_accum, help="batches per optimizer step")
    train.add_argument("--lr", type=float, default=d.lr)
    train.add_argument("--out", default=d.out, help="run folder: log.jsonl, loss.png, checkpoints/")
    train.add_argument("--save-epochs", default=",".join(map(str, DEFAULT_SAVE_EPOCHS)),
                       help="epochs to checkpoint, besides the last (default: 0, the untrained adapters, and the "
                       "paper's)")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    train.add_argument("--seed", type=int, default=d.seed)
    train.add_argument("--workers", type=int, default=d.workers, help="DataLoader workers")
    train.add_argument("--caption-column", default=d.caption_column)
    train.add_argument("--on-bad-sample", choices=("stop", "skip"), default=d.on_bad_sample)
    train.add_argument("--prompt", default=d.prompt, help="captioning prompt, masked out of the loss")
    train.add_argument("--bottleneck", type=int, default=d.bottleneck, help="adapter bottleneck r")
    train.add_argument("--itm", choices=("head", "margin"), default=d.itm,
                       help="retrieval's ITM: BLIP's itm_head cross entropy or the paper's margin loss")
    train.add_argument("--full-finetune", action="store_true", help="the paper's baseline, no adapters: the decoder "
                       "(captioning) or the text encoder (retrieval) trains, vision frozen")
    train.add_argument("--eager", action="store_true", help="every op in plain PyTorch (the fused ops' baseline)")
    train.add_argument("--train-heads", action="store_true", help="retrieval/paper: itm_head and the projections "
                       "train too (default: frozen, only adapters and the temperature train)")
    train.add_argument("--distill", action="store_true", help="retrieval/paper: BLIP's momentum distillation of "
                       "the ITC targets (alpha 0.4, ramped over the first epoch; the momentum model is an EMA of the "
                       "adapters on the same frozen base)")
    train.set_defaults(run=_train)


def _caption(args) -> int:
    from PIL import Image, UnidentifiedImageError

    from .train import data, inference

    try:
        model, tokenizer, info = inference.load(args.adapters, args.model)
        images = []
        for name in args.images:
            with Image.open(name) as image:
                images.append(image.convert("RGB"))
    except (FileNotFoundError, ValueError, UnidentifiedImageError, OSError) as error:
        print(f"fastadapter caption: {error}", file=sys.stderr)
        return 2
    if info["task"] == "retrieval":
        print(f"fastadapter caption: {args.adapters} holds retrieval adapters: no decoder to caption with",
              file=sys.stderr)
        return 2
    processor = data.image_processor(model.config.vision_config.image_size,
                                     info["base"]["model"] if info["base"]["model"] not in ("tiny", "base") else None)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    for name, text in zip(args.images, inference.captions(model, tokenizer, pixels, args.prompt, args.beams,
                                                          args.max_length, args.min_length)):
        print(f"{name}\t{text}")
    return 0


def _add_caption(commands):
    from .train import inference

    caption = commands.add_parser("caption", help="caption images with trained adapters (beam search, BLIP's "
                                  "settings)")
    caption.add_argument("images", nargs="+", help="image files")
    caption.add_argument("--adapters", required=True, help="a checkpoint folder (epoch-N) or a run folder")
    caption.add_argument("--model", help="the base (checked against the checkpoint's; default: the checkpoint's)")
    caption.add_argument("--prompt", default="a picture of ", help="the prompt the adapters were trained with")
    caption.add_argument("--beams", type=int, default=inference.BEAMS, help="1: greedy")
    caption.add_argument("--max-length", type=int, default=inference.MAX_LENGTH)
    caption.add_argument("--min-length", type=int, default=inference.MIN_LENGTH)
    caption.set_defaults(run=_caption)


def _eval(args) -> int:
    import json

    from .train import data, evaluate

    try:
        report = evaluate.evaluate(args.adapters, args.data, args.model, args.split, args.batch_size, args.beams)
    except (FileNotFoundError, ValueError, data.BadSampleError) as error:
        print(f"fastadapter eval: {error}", file=sys.stderr)
        return 2
    for key, value in report.items():
        if key != "examples":
            print(f"{key:20s} {value:.4f}" if isinstance(value, float) else f"{key:20s} {value}")
    for example in report.get("examples", []):
        print(f"  {example['image']}: {example['caption']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def _add_eval(commands):
    from .train import inference

    ev = commands.add_parser("eval", help="evaluate trained adapters: LM loss, BLEU, CIDEr-D, degeneration; "
                             "retrieval recall@k")
    ev.add_argument("--adapters", required=True, help="a checkpoint folder (epoch-N) or a run folder")
    ev.add_argument("--data", help="the image-caption folder (default: the run's synthetic set)")
    ev.add_argument("--model", help="the base (checked against the checkpoint's)")
    ev.add_argument("--split", choices=("train", "validation", "test"), default="test")
    ev.add_argument("--batch-size", type=int, default=16)
    ev.add_argument("--beams", type=int, default=inference.BEAMS)
    ev.add_argument("--json", help="also write the report here")
    ev.set_defaults(run=_eval)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastadapter", description="Fused adapter fine-tuning for BLIP.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("backends", help="which kernel backends are built and usable here").set_defaults(run=_backends)
    _add_train(commands)
    _add_caption(commands)
    _add_eval(commands)
    demo = commands.add_parser("demo", help="train BLIP-base adapters for a few steps: eager against fused")
    demo.add_argument("--steps", type=int, default=3, help="timed training steps per mode (default 3)")
    demo.add_argument("--batch", type=int, default=2, help="images per step (default 2)")
    demo.add_argument("--image-size", type=int, default=384, help="image side in pixels (default 384)")
    demo.add_argument("--bottleneck", type=int, default=256, help="adapter bottleneck r (default 256)")
    demo.set_defaults(run=_demo)
    bench = commands.add_parser("bench", help="re-measure the paper's training-cost claims (table, JSON, plot)")
    bench.add_argument("--preset", choices=("cpu", "gpu"), default="cpu",
                       help="cpu: float32, batch 2 at 224 px, 4 steps, 6 pairs in a paired run (default); gpu: bf16, "
                            "batch 32 at 384 px, 10 steps")
    bench.add_argument("--modes", help="comma-separated subset of a,b,b-text,c,c-text,d,e,c-lean,b-lean "
                       "(default: all but the lean-backbone modes c-lean, b-lean)")
    bench.add_argument("--pairs", help="comma-separated ratios X/Y (e.g. b/a,b-text/a) each timed in one process, "
                       "the two modes' steps alternating, so that machine drift cancels (default: c/b, b/a and "
                       "c-lean/b, each when both its modes run; an empty string: none)")
    bench.add_argument("--model", help="a local BlipForConditionalGeneration checkpoint (default: BLIP-base "
                                       "shapes from BlipConfig, random weights)")
    bench.add_argument("--out", default=".", help="directory for bench.json and bench.png (default: .)")
    bench.add_argument("--batch", type=int, help="override the preset's batch size")
    bench.add_argument("--image-size", type=int, help="override the preset's image size")
    bench.add_argument("--steps", type=int,
                       help="override the preset's timed steps (and pairs of steps in a paired run)")
    bench.add_argument("--warmup", type=int, help="override the preset's warm-up steps")
    bench.add_argument("--bottleneck", type=int, help="adapter bottleneck r (default 256)")
    bench.set_defaults(run=_bench)
    args = parser.parse_args(argv)
    if getattr(args, "warmup", None) is not None and args.warmup < 0:
        parser.error("--warmup must be at least 0")
    for name in ("steps", "batch", "image_size", "bottleneck"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "image_size", None) is not None:
        from transformers import BlipVisionConfig

        patch = BlipVisionConfig().patch_size  # BLIP-base's, the model both commands build
        if args.image_size < patch:  # else every mode would build a model and then fail in the patch embedding
            parser.error(f"--image-size must be at least {patch}: BLIP cuts images into {patch}-px patches")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
