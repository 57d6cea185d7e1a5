"""`fastadapter train`: adapters (and the retrieval temperature) trained with AdamW on an image-caption folder,
the base frozen; gradient accumulation, bf16 autocast on GPU, seeded, flush-denormal on CPU. Each epoch ends
with a validation loss, a JSON-lines log record and the loss plot; checkpoints at chosen epochs (checkpoint.py),
--resume continues from the newest one."""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import AdapterConfig, patch
from . import checkpoint, data, models, momentum, objectives, synthetic

PAPER_EPOCHS = (5, 10, 20, 30, 40, 50)
# Epoch 0 is the untrained adapters: the baseline `fastadapter eval` compares a run against.
DEFAULT_SAVE_EPOCHS = (0, *PAPER_EPOCHS)


@dataclass
class TrainOptions:
    model: str = "tiny"
    data: str | None = None  # None: the built-in synthetic set, written under out/
    task: str = "captioning"
    epochs: int = 20
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 1e-2  # for the built-in tiny run; a pretrained checkpoint's adapters usually want 1e-4 to 1e-3
    out: str = "fastadapter-run"
    save_epochs: tuple[int, ...] = DEFAULT_SAVE_EPOCHS  # and always the last epoch
    resume: bool = False
    seed: int = 0
    workers: int = 2
    caption_column: str = "text"
    on_bad_sample: str = "stop"
    prompt: str = "a picture of "  # captioning only
    bottleneck: int = 64
    itm: str = "head"
    max_length: int = 40
    full_finetune: bool = False  # the paper's baseline: the decoder (captioning) or text encoder (retrieval) trains
    eager: bool = False  # every op in plain PyTorch (adapters, losses): the baseline of the fused ops
    train_heads: bool = False  # retrieval/paper: itm_head and the projections train too
    distill: bool = False  # retrieval/paper: momentum distillation of the ITC targets (momentum.py)
    alpha: float = momentum.ALPHA


def _seed(seed: int):
    random.seed(seed)
    torch.manual_seed(seed)


def _log(path: Path, record: dict):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _loader(samples, processor, tokenizer, opts, shuffle, seed):
    def collate(batch):
        return data.collate(batch, tokenizer, opts.max_length, prompt_of(opts))

    # Retrieval drops a short last batch: ITM needs a second image in the batch for its negatives.
    drop_last = opts.task == "retrieval" and len(samples) > opts.batch_size
    return torch.utils.data.DataLoader(
        data.CaptionDataset(samples, processor), batch_size=opts.batch_size, shuffle=shuffle, collate_fn=collate,
        num_workers=opts.workers, generator=torch.Generator().manual_seed(seed), persistent_workers=opts.workers > 0,
        drop_last=drop_last)


def _objective(model, tokenizer, opts):
    backend = "eager" if opts.eager else "auto"
    if opts.task == "captioning":
        return objectives.CaptioningObjective(model, tokenizer, opts.prompt)
    if opts.task == "retrieval":
        return objectives.RetrievalObjective(model, tokenizer, opts.itm, backend)
    return objectives.PaperObjective(model, tokenizer, opts.itm, backend=backend)


def prompt_of(opts) -> str:
    """The captions' prompt: captioning only (the paper task trains as BLIP pre-trains, without one)."""
    return opts.prompt if opts.task == "captioning" else ""


HEADS = ("itm_head", "vision_proj", "text_proj")


def train_heads(model, task: str):
    if task == "captioning":
        raise ValueError("--train-heads: the retrieval heads (itm_head, the projections) are in --task retrieval "
                         "and paper; captioning's LM head stays frozen")
    for name in HEADS:
        for p in getattr(model, name).parameters():
            p.requires_grad_(True)


def full_finetune(model, task: str):
    """The paper's baseline: everything frozen but the text tower the task trains (vision always frozen)."""
    if task == "paper":
        raise ValueError("--full-finetune: the paper compares adapters in every tower against full fine-tuning of "
                         "one task's text tower; pass --task captioning or retrieval")
    trained = model.text_decoder if task == "captioning" else model.text_encoder
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained.parameters():
        p.requires_grad_(True)


class Run:
    """One training run's pieces, built from options (and, with --resume, the newest checkpoint)."""

    def __init__(self, opts: TrainOptions):
        self.opts, self.out = opts, Path(opts.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        _seed(opts.seed)
        folder_path = Path(opts.data) if opts.data else synthetic.write_folder(self.out / "synthetic-data")
        self.folder = data.read_folder(folder_path, opts.caption_column, opts.on_bad_sample)
        self.resume_from = checkpoint.latest(self.out) if opts.resume else None
        self.tokenizer = self._tokenizer()
        model, self.base = models.build_model(opts.model, opts.task, self.tokenizer, opts.seed)
        self._check_base()
        if opts.full_finetune:
            full_finetune(model, opts.task)
        else:
            patch(model, AdapterConfig(bottleneck=opts.bottleneck, backend="eager" if opts.eager else "auto",
                                       fused_losses=not opts.eager))
        if opts.train_heads:
            train_heads(model, opts.task)
        self.model = model.to(self.device)
        self.objective = _objective(model, self.tokenizer, opts).to(self.device)
        self.extra = {} if opts.task == "captioning" else {"temperature": self.objective.itc.temperature}
        self.momentum = self._momentum()
        params = [p for p in self.objective.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=opts.lr)
        size = model.config.vision_config.image_size
        processor = data.image_processor(size, opts.model if models.is_checkpoint(opts.model) else None)
        self.train_loader = _loader(self.folder.split("train"), processor, self.tokenizer, opts, True, opts.seed)
        held = self.folder.split("validation")
        self.validation_loader = _loader(held, processor, self.tokenizer, opts, False, 0) if held else None
        self.start_epoch = 1
        if self.resume_from is not None:
            info = checkpoint.restore(self.resume_from, self.model, self.extra, self.optimizer, self.momentum)
            self.start_epoch = info["epoch"] + 1

    def _momentum(self):
        if not self.opts.distill:
            return None
        if self.opts.task == "captioning" or self.opts.full_finetune:
            raise ValueError("--distill: momentum distillation is for the ITC targets of --task retrieval or paper, "
                             "with adapters")
        ema = momentum.MomentumAdapters(self.model)
        retrieval = getattr(self.objective, "retrieval", self.objective)
        retrieval.momentum = ema
        return ema

    def _tokenizer(self):
        if self.resume_from is not None:
            return models.load_tokenizer(self.resume_from / "tokenizer")
        if models.is_checkpoint(self.opts.model):
            return models.load_tokenizer(self.opts.model)
        captions = [s.caption for s in self.folder.samples] + [self.opts.prompt]
        return models.build_tokenizer(captions)

    def _check_base(self):
        if self.resume_from is None:
            return
        saved = checkpoint.read_info(self.resume_from)["base"]
        if saved != self.base:
            raise ValueError(f"--resume: {self.resume_from} was trained on base {saved}, but this run builds "
                             f"{self.base}; pass the same --model and --seed")

    def batches(self, loader):
        for batch in loader:
            yield {k: v.to(self.device) for k, v in batch.items()}

    def loss(self, batch):
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.device == "cuda"):
            return self.objective(batch)


def train_epoch(run: Run, epoch: int) -> dict:
    from tqdm import tqdm

    run.objective.train()
    total, count, images, start = 0.0, 0, 0, time.perf_counter()
    bar = tqdm(run.batches(run.train_loader), total=len(run.train_loader), desc=f"epoch {epoch}", leave=False)
    run.optimizer.zero_grad(set_to_none=True)
    retrieval = getattr(run.objective, "retrieval", run.objective)
    for step, batch in enumerate(bar, 1):
        if run.momentum is not None:
            retrieval.alpha = momentum.ramped_alpha(run.opts.alpha, epoch, step, len(run.train_loader))
        loss, _ = run.loss(batch)
        (loss / run.opts.grad_accum).backward()
        if step % run.opts.grad_accum == 0 or step == len(run.train_loader):
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
            if run.momentum is not None:
                run.momentum.update()
        n = batch["pixel_values"].shape[0]
        total, count, images = total + loss.item() * n, count + n, images + n
        bar.set_postfix(loss=f"{loss.item():.4f}", img_s=f"{images / (time.perf_counter() - start):.1f}")
    seconds = time.perf_counter() - start
    return {"train_loss": total / max(count, 1), "images_per_s": images / seconds, "seconds": seconds}


@torch.no_grad()
def validation_loss(run: Run) -> float | None:
    if run.validation_loader is None:
        return None
    run.objective.eval()
    total, count = 0.0, 0
    for batch in run.batches(run.validation_loader):
        n = batch["pixel_values"].shape[0]
        total, count = total + run.loss(batch)[0].item() * n, count + n
    return total / count


def plot(log_path: Path, out: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [json.loads(line) for line in log_path.read_text().splitlines()]
    epochs = [e for e in epochs if "epoch" in e]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e["epoch"] for e in epochs], [e["train_loss"] for e in epochs], marker="o", label="training")
    held = [e for e in epochs if e.get("validation_loss") is not None]
    if held:
        ax.plot([e["epoch"] for e in held], [e["validation_loss"] for e in held], marker="o", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _save(run: Run, epoch: int):
    opts = run.opts
    info = {"base": run.base, "task": opts.task, "prompt": prompt_of(opts), "caption_column": opts.caption_column}
    return checkpoint.save(run.out, epoch, run.model, run.extra, run.optimizer, run.tokenizer, info, run.momentum)


def train(opts: TrainOptions) -> dict:
    """Runs the training; returns the last epoch's log record."""
    if not torch.cuda.is_available():
        torch.set_flush_denormal(True)  # denormals in frozen-base backward cost a CPU far more than they change
    run = Run(opts)
    log_path = run.out / "log.jsonl"
    _log(log_path, {"run": {**asdict(opts), "save_epochs": list(opts.save_epochs)}, "device": run.device,
                    "flush_denormal": run.device == "cpu", "base": run.base,
                    "resumed_from": str(run.resume_from) if run.resume_from else None,
                    "samples": {name: len(run.folder.split(name)) for name in data.SPLITS},
                    "skipped_rows": len(run.folder.skipped), "skipped": run.folder.skipped[:20]})
    record = {}
    if 0 in opts.save_epochs and run.start_epoch == 1:
        _save(run, 0)
    for epoch in range(run.start_epoch, opts.epochs + 1):
        record = {"epoch": epoch, **train_epoch(run, epoch), "validation_loss": validation_loss(run)}
        _log(log_path, record)
        plot(log_path, run.out / "loss.png")
        if epoch in opts.save_epochs or epoch == opts.epochs:
            record["checkpoint"] = str(_save(run, epoch))
        print(json.dumps(record))
    return record
