"""`fastadapter train` end to end on the built-in synthetic set with the tiny config, each task: the loss
decreases, the log, plot and checkpoints exist (adapters in safetensors, no pickle), a resumed run continues at the
next epoch with the saved optimizer state, a mismatched base is refused; a bad row stops or is skipped."""

import json

import pytest
import torch
from safetensors.torch import load_file

from fastadapter import cli
from fastadapter.train import checkpoint, trainer


def _records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _train(tmp_path, **kw):
    opts = dict(out=str(tmp_path / "run"), epochs=2, workers=0, batch_size=16, save_epochs=(1,))
    opts.update(kw)
    return trainer.train(trainer.TrainOptions(**opts))


@pytest.mark.parametrize("task", ["captioning", "retrieval", "paper"])
def test_train_two_epochs_logs_plots_and_checkpoints(tmp_path, task):
    _train(tmp_path, task=task)
    out = tmp_path / "run"
    first, *epochs = _records(out)
    assert first["flush_denormal"] and first["base"]["model"] == "tiny" and first["skipped_rows"] == 0
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[1]["train_loss"] < epochs[0]["train_loss"]
    assert epochs[1]["validation_loss"] is not None and epochs[1]["images_per_s"] > 0
    assert (out / "loss.png").stat().st_size > 0
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved == ["epoch-0001", "epoch-0002"]  # no temporary folder left behind
    files = {p.name for p in (out / "checkpoints" / "epoch-0002").rglob("*") if p.is_file()}
    assert {"adapters.safetensors", "state.safetensors", "state.json"} <= files
    assert not any(name.endswith((".pt", ".pth", ".bin", ".pkl")) for name in files)


def test_resume_continues_at_the_next_epoch_with_the_optimizer_state(tmp_path):
    _train(tmp_path, epochs=2, save_epochs=(1, 2))
    out = tmp_path / "run"
    saved = load_file(str(out / "checkpoints" / "epoch-0002" / "state.safetensors"))
    run = trainer.Run(trainer.TrainOptions(out=str(out), epochs=3, workers=0, resume=True))
    assert run.start_epoch == 3
    state = run.optimizer.state_dict()["state"]
    for index, values in state.items():
        for key, value in values.items():
            assert torch.equal(value, saved[f"optimizer.{index}.{key}"]), (index, key)
    _train(tmp_path, epochs=3, resume=True)
    assert [e["epoch"] for e in _records(out) if "epoch" in e] == [1, 2, 3]
    assert json.loads((out / "checkpoints" / "epoch-0003" / "state.json").read_text())["epoch"] == 3


def test_resume_with_another_base_is_refused(tmp_path):
    _train(tmp_path, epochs=1)
    with pytest.raises(ValueError, match="was trained on base"):
        _train(tmp_path, epochs=2, resume=True, seed=1)


def test_latest_ignores_unfinished_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "epoch-0001").mkdir(parents=True)
    (root / "epoch-0001" / "state.json").write_text("{}")
    (root / ".epoch-0002.tmp").mkdir()
    (root / "epoch-0003").mkdir()  # no state.json: never published
    assert checkpoint.latest(tmp_path).name == "epoch-0001"


def test_cli_bad_row_stops_or_is_skipped(tmp_path, capsys):
    from fastadapter.train import synthetic

    data = synthetic.write_folder(tmp_path / "data", images=30, image_size=16)
    with open(data / "metadata.jsonl", "a") as f:
        f.write(json.dumps({"file_name": "gone.png", "text": "a lost image", "split": "train"}) + "\n")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--workers", "0"]
    assert cli.main(args) == 2
    assert "metadata.jsonl line 31: missing image 'gone.png'" in capsys.readouterr().err
    assert cli.main([*args, "--on-bad-sample", "skip"]) == 0
    assert _records(tmp_path / "run")[0]["skipped_rows"] == 1


def test_caption_rebuilds_the_run_from_its_checkpoint(tmp_path, capsys):
    _train(tmp_path, epochs=1)
    run = tmp_path / "run"
    images = sorted(str(p) for p in (run / "synthetic-data").glob("0000[0-2].png"))
    capsys.readouterr()  # the training's own output
    assert cli.main(["caption", "--adapters", str(run), "--beams", "1", *images]) == 0
    lines = capsys.readouterr().out.splitlines()  # "file<TAB>caption" (an untrained caption may be empty)
    assert [line.split("\t")[0] for line in lines] == images
    for line in lines:
        text = line.split("\t")[1]
        assert "[DEC]" not in text and not text.startswith("a picture of")  # specials and the prompt stripped
    assert cli.main(["caption", "--adapters", str(run), "--model", "base", *images]) == 2
    assert "is not the base" in capsys.readouterr().err
    assert cli.main(["caption", "--adapters", str(tmp_path / "nothing"), *images]) == 2


def test_eval_reports_metrics_and_the_untrained_baseline(tmp_path, capsys):
    _train(tmp_path, epochs=1, save_epochs=(0,))
    run = tmp_path / "run"
    assert cli.main(["eval", "--adapters", str(run / "checkpoints" / "epoch-0000"), "--beams", "1"]) == 0
    assert cli.main(["eval", "--adapters", str(run), "--beams", "1", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    for name in ("lm_loss", "bleu", "cider_d", "distinct_1", "distinct_2", "repetition_rate", "top_caption_share"):
        assert out.count(name) == 2, name
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["split"] == "test" and report["samples"] > 0 and report["checkpoint"].endswith("epoch-0001")


@pytest.mark.parametrize("task", ["retrieval", "paper"])
def test_eval_retrieval_reports_recalls(tmp_path, capsys, task):
    _train(tmp_path, task=task, epochs=1)
    assert cli.main(["eval", "--adapters", str(tmp_path / "run"), "--beams", "1"]) == 0
    out = capsys.readouterr().out
    assert all(f"{d}_r@{k}" in out for d in ("image_to_text", "text_to_image") for k in (1, 5, 10))
    assert ("bleu" in out) == (task == "paper")


@pytest.mark.parametrize("task, tower", [("captioning", "text_decoder"), ("retrieval", "text_encoder")])
def test_full_finetune_trains_one_text_tower_and_checkpoints_its_weights(tmp_path, task, tower, capsys):
    run = trainer.Run(trainer.TrainOptions(out=str(tmp_path / "probe"), task=task, workers=0, full_finetune=True))
    trained = {n.split(".")[0] for n, p in run.model.named_parameters() if p.requires_grad}
    assert trained == {tower}
    _train(tmp_path, task=task, epochs=1, full_finetune=True)
    saved = tmp_path / "run" / "checkpoints" / "epoch-0001"
    assert (saved / "weights.safetensors").is_file() and not (saved / "adapters").exists()
    assert all(name.startswith(tower) for name in load_file(str(saved / "weights.safetensors")))
    capsys.readouterr()
    assert cli.main(["eval", "--adapters", str(tmp_path / "run"), "--beams", "1"]) == 0


@pytest.mark.parametrize("task", ["captioning", "retrieval"])
def test_eager_ops_train_as_the_fused_ones(tmp_path, task):
    """--eager (adapters, LM loss, ITC, sampler in plain PyTorch) against the fused ops: the same first epoch
    within float rounding (the sampler's draws differ by backend, so retrieval uses the margin ITM, which draws
    nothing)."""
    itm = "margin" if task == "retrieval" else "head"
    fused = _train(tmp_path / "fused", task=task, epochs=1, itm=itm)
    eager = _train(tmp_path / "eager", task=task, epochs=1, itm=itm, eager=True)
    assert eager["train_loss"] == pytest.approx(fused["train_loss"], rel=1e-4)
    assert eager["validation_loss"] == pytest.approx(fused["validation_loss"], rel=1e-4)


def test_train_heads_trains_and_checkpoints_the_retrieval_heads(tmp_path):
    run = trainer.Run(trainer.TrainOptions(out=str(tmp_path / "probe"), task="retrieval", workers=0,
                                           train_heads=True))
    heads = {n.split(".")[0] for n, p in run.model.named_parameters() if p.requires_grad and ".adapter." not in n}
    assert heads == set(trainer.HEADS)
    _train(tmp_path, task="retrieval", epochs=1, train_heads=True)
    saved = tmp_path / "run" / "checkpoints" / "epoch-0001"
    assert (saved / "adapters").is_dir()
    assert {n.split(".")[0] for n in load_file(str(saved / "weights.safetensors"))} == set(trainer.HEADS)
    with pytest.raises(ValueError, match="--train-heads"):
        trainer.Run(trainer.TrainOptions(out=str(tmp_path / "c"), workers=0, train_heads=True))
