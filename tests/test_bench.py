"""fastadapter bench on a tiny run: every mode trains, the report has table, JSON and plot."""

import dataclasses
import json
import statistics

import pytest
import torch
from helpers import benchmarks_module

from fastadapter import bench, cli
from fastadapter.bench import measure, models, steps


def test_bench_tiny_run(tmp_path, capsys):
    report = bench.run("cpu", ["a", "b-text", "c-text", "d"], out_dir=str(tmp_path), batch=1, image_size=32,
                       steps=1, warmup=0, bottleneck=8)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["results"].keys() == report["results"].keys() == {"a", "b-text", "c-text", "d"}
    assert saved["complete"] and not (tmp_path / "bench.json.tmp").exists()
    a, eager, fused = (saved["results"][m] for m in ("a", "b-text", "c-text"))
    assert a["trainable"] == 137_881_148 and a["untied_trainable"] == 161_323_580
    assert eager["trainable"] == fused["trainable"] == 12 * (2 * 768 * 8 + 3 * 8 + 768)
    assert eager["losses"] == pytest.approx(fused["losses"], rel=1e-4)  # same init, same batch
    assert fused["saved_bytes"] < a["saved_bytes"]
    assert saved["results"]["d"]["trainable"] == 24 * (2 * 768 * 8 + 3 * 8 + 768)  # (c) with the fused LM loss
    assert saved["results"]["d"]["saved_bytes"] > 0
    assert set(saved["ratios"]) >= {"b-text/a", "c-text/a"}
    assert (tmp_path / "bench.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "161,323,580" in out and "| c-text |" in out and "fused AdamW" in out
    # why the adapters' count is not the paper's: 24 adapters in (d), every tower, the paper's 48 of the same size
    each = 2 * 768 * 8 + 3 * 8 + 768
    assert f"in 24 adapters of {each:,} at r = 8" in out and f"would train {48 * each:,}" in out
    assert saved["optimizer"] == bench.OPTIMIZER
    # the paper's direction, judged for each adapter mode against (a), with the phases that explain it
    assert saved["direction"].keys() == {"b-text", "c-text"} and "Does the paper's direction hold here?" in out
    for mode in ("b-text", "c-text"):
        judged = saved["direction"][mode]
        assert judged["time"]["verdict"] == "not resolved"  # one step each decides nothing
        assert judged["memory"]["ratio"] == pytest.approx(saved["results"][mode]["peak_bytes"] / a["peak_bytes"])
        assert saved["results"][mode]["phases_s"].keys() == {"forward", "backward", "optimizer"}


@pytest.mark.parametrize("mode", ["a", "c-text"])
def test_saved_bytes_counted_in_the_first_warm_up_step_as_before_it(mode):
    """With a warm-up step, run_mode counts the bytes saved for backward in that step's forward instead of in a
    forward of its own: the same bytes, and the step still trains (the timed steps see a stepped model)."""
    preset = bench.Preset("cpu", "float32", batch=1, image_size=32, steps=1, warmup=0, bottleneck=8)
    apart = bench.run_mode(mode, preset)
    within = bench.run_mode(mode, dataclasses.replace(preset, warmup=1))
    assert within["saved_bytes"] == apart["saved_bytes"] > 0
    assert within["losses"] != apart["losses"]  # the warm-up step updated the weights before the timed one


def test_bench_refuses_bad_requests(tmp_path):
    with pytest.raises(ValueError, match="unknown mode"):
        bench.run("cpu", ["z"], out_dir=str(tmp_path))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="preset 'gpu' needs a CUDA device, and none is visible"):
            bench.run("gpu", ["a"], out_dir=str(tmp_path))
    with pytest.raises(SystemExit):
        cli.main(["bench", "--steps", "0"])


def test_bench_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        bench.build_model(str(tmp_path / "nowhere"), bench.PRESETS["cpu"])


def test_bench_on_a_checkpoint_takes_its_image_size(tmp_path, capsys):
    from blip_fixtures import VISION, blip_config
    from transformers import BlipForConditionalGeneration, BlipForImageTextRetrieval

    checkpoint = tmp_path / "tiny-blip"
    BlipForConditionalGeneration(blip_config()).save_pretrained(checkpoint)
    report = bench.run("cpu", ["a", "c-text"], checkpoint=str(checkpoint), out_dir=str(tmp_path / "out"), batch=1,
                       steps=1, warmup=0, bottleneck=8)
    assert not bench.failures(report)
    assert report["preset"]["image_size"] == VISION["image_size"]  # not the CPU preset's 224
    assert report["results"]["c-text"]["trainable"] == 2 * (2 * 32 * 8 + 3 * 8 + 32)  # the checkpoint's decoder
    assert f"checkpoint {checkpoint}" in capsys.readouterr().out
    with pytest.raises(ValueError, match=f"takes {VISION['image_size']}-px images; --image-size 224 does not fit"):
        bench.run("cpu", ["a"], checkpoint=str(checkpoint), out_dir=str(tmp_path / "out"), image_size=224)
    retrieval = tmp_path / "tiny-blip-retrieval"
    BlipForImageTextRetrieval(blip_config()).save_pretrained(retrieval)
    with pytest.raises(ValueError, match="is a BlipForImageTextRetrieval; the bench trains captioning"):
        bench.run("cpu", ["a"], checkpoint=str(retrieval), out_dir=str(tmp_path / "out"))


def test_no_stale_plot_when_nothing_was_measured(tmp_path, monkeypatch, capsys):
    def broken(device, fn, *args):
        raise RuntimeError("out of memory")

    (tmp_path / "bench.png").write_bytes(b"an earlier run's chart")
    monkeypatch.setattr(steps, "in_fresh_process", broken)
    report = bench.run("cpu", ["a", "b"], out_dir=str(tmp_path), batch=1, image_size=32, steps=1, warmup=0,
                       bottleneck=8)
    assert bench.failures(report) == ["a", "b", "paired b/a"]  # b/a rode in b's process
    assert not (tmp_path / "bench.png").exists()
    assert "no plot: no mode measured" in capsys.readouterr().out


TINY = bench.Preset("cpu", "float32", batch=1, image_size=32, steps=2, warmup=0, bottleneck=8)


def test_paired_eager_against_fused():
    paired = bench.paired(TINY, "c", "b")
    assert paired["steps_each"] == 2 and paired["how"].startswith("the same adapters switching")
    assert paired["step_s"]["b"] > 0 and paired["step_s"]["c"] > 0
    assert paired["ratio"] == pytest.approx(paired["step_s"]["c"] / paired["step_s"]["b"])


def _fake_steps(monkeypatch, name_of, seconds, cpu_seconds):
    """Replaces the training step: records which mode each step ran (name_of(model, optimizer)) and returns the next of
    that mode's wall seconds, advancing the process CPU clock by the next of its CPU seconds."""
    order, clock = [], {"cpu": 0.0}

    def fake_step(model, batch, optimizer, device="cpu"):
        order.append(name_of(model, optimizer))
        clock["cpu"] += next(cpu_seconds[order[-1]])
        wall = next(seconds[order[-1]])
        phases = {"forward": wall / 2, "backward": wall / 4, "optimizer": wall / 4}
        return measure.TrainStep(wall, torch.zeros(()), phases)

    monkeypatch.setattr(measure, "timed_train_step", fake_step)
    monkeypatch.setattr(steps.time, "process_time", lambda: clock["cpu"])
    return order


def test_paired_run_alternates_which_side_goes_first(monkeypatch):
    """Pairs run b,c then c,b by turns; the spread is of each pair's own c/b, by wall and by CPU time."""
    import fastadapter

    def mode_of(model, optimizer):
        backend = next(iter(fastadapter.adapters(model).values())).config.backend
        return "b" if backend == "eager" else "c"

    seconds = {"b": iter([1.0, 2.0, 4.0, 8.0, 1.0]), "c": iter([9.0, 1.0, 1.5, 2.0, 2.5])}  # first pair: warm-up
    cpu_seconds = {"b": iter([1.0] * 5), "c": iter([3.0, 0.5, 1.0, 0.5, 1.0])}  # the process's CPU time per step
    order = _fake_steps(monkeypatch, mode_of, seconds, cpu_seconds)
    paired = bench.paired(bench.Preset("cpu", "float32", batch=1, image_size=32, steps=4, warmup=1, bottleneck=8),
                          "c", "b")
    assert order == ["b", "c", "c", "b", "b", "c", "c", "b", "b", "c"]
    assert paired["steps_each"] == 4
    assert paired["step_s"] == {"b": 3.0, "c": 1.75} and paired["ratio"] == 1.75 / 3.0
    assert paired["phases_s"]["b"] == {"forward": 1.5, "backward": 0.75, "optimizer": 0.75}  # medians per phase
    ratios = [0.5, 0.375, 0.25, 2.5]
    wall = paired["pairs_wall_time"]
    assert wall["quartiles"] == pytest.approx(statistics.quantiles(ratios, n=4))
    assert wall["numerator_faster"] == 3 and wall["pairs"] == 4
    assert min(ratios) <= wall["median_ci95"][0] <= statistics.median(ratios) <= wall["median_ci95"][1] <= max(ratios)
    cpu = paired["pairs_process_cpu_time"]
    assert cpu["quartiles"] == pytest.approx(statistics.quantiles([0.5, 1.0, 0.5, 1.0], n=4))
    assert cpu["numerator_faster"] == 2


def test_a_fused_eager_pair_on_a_measured_model_skips_the_warm_up(monkeypatch):
    """Riding in mode (c)'s process, (c)/(b) reuses the model (c) has just been measured on: no warm-up pair."""
    import fastadapter

    def mode_of(model, optimizer):
        return "b" if next(iter(fastadapter.adapters(model).values())).config.backend == "eager" else "c"

    preset = bench.Preset("cpu", "float32", batch=1, image_size=32, steps=2, warmup=1, bottleneck=8)
    setup = bench.setup_mode(preset, "c")
    order = _fake_steps(monkeypatch, mode_of, {m: iter([1.0] * 9) for m in "bc"}, {m: iter([1.0] * 9) for m in "bc"})
    assert bench.paired(preset, "c", "b", numerator_setup=setup)["steps_each"] == 2 and len(order) == 4
    order.clear()
    bench.paired(preset, "c", "b")  # a model of its own: one warm-up pair first
    assert len(order) == 6


def test_paired_modes_each_train_their_own_model(monkeypatch):
    """A pair that is not fused/eager of the same adapters (here b/a) alternates two models, each prepared for
    its mode: (a) trains the whole decoder without adapters, (b) only eager adapters."""
    import fastadapter

    def mode_of(model, optimizer):
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if fastadapter.patching.patch_state(model) is None:
            assert trained == {id(p) for p in model.text_decoder.parameters()}
            return "a"
        adapters = fastadapter.adapters(model).values()
        assert trained == {id(p) for a in adapters for p in a.parameters()}
        assert all(a.config.backend == "eager" for a in adapters)
        return "b"

    seconds = {"a": iter([2.0, 2.0, 4.0]), "b": iter([1.0, 3.0, 2.0])}
    order = _fake_steps(monkeypatch, mode_of, seconds, {"a": iter([1.0] * 3), "b": iter([1.0] * 3)})
    paired = bench.paired(bench.Preset("cpu", "float32", batch=1, image_size=32, steps=3, warmup=0, bottleneck=8),
                          "b", "a")
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert paired["how"].startswith("each mode its own model") and paired["step_s"] == {"a": 2.0, "b": 2.0}
    assert paired["pairs_wall_time"]["numerator_faster"] == 2  # 1/2, 3/2, 2/4


def test_pairs_are_checked():
    assert bench.parse_pairs("b/a, b-text/a,") == [("b", "a"), ("b-text", "a")]
    for bad, message in (("b", "not of the form X/Y"), ("b/b", "two different"), ("x/a", "measurable"),
                         ("b/z", "measurable")):
        with pytest.raises(ValueError, match=message):
            bench.parse_pairs(bad)
    with pytest.raises(ValueError, match="two different measurable modes"):
        bench.run_mode("b", TINY, then_paired="b")  # refused before any model is built
    with pytest.raises(ValueError, match="two different measurable modes"):
        bench.run("cpu", ["a"], pairs=[("e", "z")])
    assert cli.main(["bench", "--pairs", "c/x"]) == 2


def test_a_failing_mode_keeps_the_others(tmp_path, monkeypatch, capsys):
    real = steps.in_fresh_process

    def broken_for_b_text(device, fn, *args):
        if args and args[0] == "b-text":
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return real(device, fn, *args)

    monkeypatch.setattr(steps, "in_fresh_process", broken_for_b_text)
    report = bench.run("cpu", ["a", "b-text"], out_dir=str(tmp_path), batch=1, image_size=32, steps=1, warmup=0,
                       bottleneck=8)
    assert report["results"]["a"]["step_s"] > 0
    assert "illegal memory access" in report["results"]["b-text"]["note"]
    assert bench.failures(report) == ["b-text"]
    assert json.loads((tmp_path / "bench.json").read_text())["results"]["b-text"]["failed"]
    assert "| b-text |" in capsys.readouterr().out


def test_default_pairs_ride_in_their_numerators_process(tmp_path, capsys):
    """By default c/b and b/a are paired, each after its numerator's own measurement in that mode's process; the
    verdict on (b) then comes from the paired run."""
    report = bench.run("cpu", ["a", "b", "c"], out_dir=str(tmp_path), batch=1, image_size=32, steps=1, warmup=0,
                       bottleneck=8)
    assert list(report["paired"]) == ["b/a", "c/b"] and not bench.failures(report)
    for name, how in (("c/b", "the same adapters switching"), ("b/a", "each mode its own model")):
        paired = report["paired"][name]
        num, den = name.split("/")
        assert paired["how"].startswith(how) and paired["steps_each"] == 1
        assert paired["ratio"] == pytest.approx(paired["step_s"][num] / paired["step_s"][den])
        assert "paired" not in report["results"][num]
    assert report["preset"]["pair_steps"] is None and bench.PRESETS["cpu"].pairs_per_run == 6  # --steps sets both
    assert report["direction"]["b"]["time"]["from"] == "paired"
    assert report["direction"]["c"]["time"]["from"] == "separate"
    assert report["fused_against_eager"]["c/b"]["time"]["from"] == "paired"
    out = capsys.readouterr().out
    assert "(c) against (b) in one process, the same adapters switching" in out
    assert "(b) against (a) in one process, each mode its own model" in out
    # the ratio table sets each paired figure beside the separate processes' one
    for name in ("c/b", "b/a"):
        own, paired = report["ratios"][name]["time"], report["paired"][name]["ratio"]
        assert f"| {name} | {own:.3f} | {paired:.3f} |" in out
    assert f"| c/a | {report['ratios']['c/a']['time']:.3f} | — |" in out


def test_requested_pairs_run_in_their_own_process(tmp_path, capsys):
    """--pairs: a pair rides in its numerator's process when that mode runs; any other pair gets a process of
    its own, after the modes."""
    report = bench.run("cpu", ["c-text"], out_dir=str(tmp_path), pairs=[("b-text", "a"), ("c-text", "b-text")],
                       batch=1, image_size=32, steps=1, warmup=0, bottleneck=8)
    assert list(report["paired"]) == ["c-text/b-text", "b-text/a"] and not bench.failures(report)
    assert report["paired"]["c-text/b-text"]["how"].startswith("the same adapters switching")
    assert report["paired"]["b-text/a"]["how"].startswith("each mode its own model")
    assert json.loads((tmp_path / "bench.json").read_text())["paired"].keys() == report["paired"].keys()
    out = capsys.readouterr().out
    assert "(b-text) against (a) in one process, each mode its own model" in out
    # the pairs alone are judged on time; what needs both modes' own runs says it was not measured
    assert report["fused_against_eager"]["c-text/b-text"]["time"]["from"] == "paired"
    assert report["fused_against_eager"]["c-text/b-text"]["saved"]["ratio"] is None
    assert report["direction"].keys() == {"b-text"} and report["direction"]["b-text"]["memory"]["ratio"] is None
    assert "| ratio | step time" not in out  # no ratio of two own runs: no empty table


def test_no_pairs_when_none_are_asked_for(tmp_path, monkeypatch):
    ran = []

    def record(device, fn, *args):
        # run_mode: the mode it pairs with afterwards, or None; paired: its pair
        ran.append((fn.__name__, args[-1] if fn is steps.run_mode else "/".join(args[1:3])))
        raise RuntimeError("not run in this test")

    monkeypatch.setattr(steps, "in_fresh_process", record)
    report = bench.run("cpu", ["b", "c"], out_dir=str(tmp_path), pairs=[], batch=1, image_size=32, steps=1,
                       warmup=0, bottleneck=8)
    assert ran == [("run_mode", None), ("run_mode", None)] and report["paired"] == {}
    ran.clear()
    bench.run("cpu", ["b", "c"], out_dir=str(tmp_path), batch=1, image_size=32, steps=1, warmup=0, bottleneck=8)
    assert ran == [("run_mode", None), ("run_mode", "b")]  # by default (c)/(b) rides in mode c's process
    ran.clear()
    bench.run("cpu", ["a", "b", "c", "b-text", "c-text"], out_dir=str(tmp_path), batch=1, image_size=32, steps=1,
              warmup=0, bottleneck=8)
    # and (b)/(a) in mode b's; (c-text)/(b-text) only when asked for
    assert ran == [("run_mode", None), ("run_mode", "a"), ("run_mode", "b"), ("run_mode", None), ("run_mode", None)]
    ran.clear()
    bench.run("cpu", ["a", "b"], out_dir=str(tmp_path), pairs=[("b", "a"), ("b", "a"), ("b-text", "a")], batch=1,
              image_size=32, steps=1, warmup=0, bottleneck=8)
    assert ran == [("run_mode", None), ("run_mode", "a"), ("paired", "b-text/a")]  # once each; b-text/a on its own


def test_post_init_covers_the_skipped_default_init(monkeypatch):
    """build_model skips torch's default init of the modules BLIP's post_init re-initialises; filled with NaN
    instead, none may survive construction."""
    monkeypatch.setattr(models, "_SKIPPED_INIT_FILL", float("nan"))
    model = bench.build_model(None, bench.Preset("cpu", "float32", batch=1, image_size=32, steps=1, warmup=0))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    monkeypatch.setattr(models, "_SKIPPED_INIT_FILL", None)
    assert torch.nn.Linear(2, 2).weight.abs().sum() > 0  # torch's own init is back after construction


def test_bench_models_draw_post_inits_distribution_from_a_pool():
    """build_model's weights come from a pool of normal values (fast), each with post_init's mean and std, the
    same for the same seed, different between tensors; torch's normal_ is back afterwards."""
    preset = bench.Preset("cpu", "float32", batch=1, image_size=32, steps=1, warmup=0)
    torch.manual_seed(3)
    model = bench.build_model(None, preset)
    torch.manual_seed(3)
    again = bench.build_model(None, preset)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))
    std = model.config.text_config.initializer_range
    attention = model.text_decoder.bert.encoder.layer[0].attention.self
    embeddings = model.text_decoder.bert.embeddings.word_embeddings.weight  # larger than the pool: several slices
    for weight in (attention.query.weight, attention.key.weight, embeddings):
        assert abs(weight.std().item() / std - 1) < 0.01 and abs(weight.mean().item()) < 0.01 * std
    assert embeddings.numel() > models._NORMAL_POOL_SIZE
    assert not torch.equal(attention.query.weight, attention.key.weight)
    assert model.text_decoder.bert.encoder.layer[0].output.LayerNorm.weight.eq(1).all()  # post_init's other inits
    assert torch.Tensor.normal_ is torch._C.TensorBase.normal_
    x = torch.empty(1000).normal_(5.0, 2.0)
    assert abs(x.mean().item() - 5) < 0.5 and abs(x.std().item() - 2) < 0.3


def test_op_profile_script_runs_and_reads_its_figures():
    """benchmarks/op_profile.py (a GPU diagnostic, run by benchmarks/gpu/run.sh) at a tiny size on CPU, and its
    table's verdict on synthetic GPU figures: a call is host-bound when issuing it takes longer than its kernels."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "op_profile.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--tokens", "9", "--bottlenecks", "4",
                           "--calls", "2"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| 9 | 4 | forward | eager |" in done.stdout and "| 9 | 4 | forward_backward | cpu |" in done.stdout

    op_profile = benchmarks_module("op_profile")
    rows = [{"tokens": 8, "r": 4, "phase": "forward", "impl": impl, "launches": 5, "device_us": device, "host_us": host,
             "wall_us": max(host, device), "top": [("gemm", device)]} for impl, host, device in
            (("eager", 30.0, 80.0), ("cuda", 90.0, 40.0))]
    text = op_profile.table(rows, "cuda")
    assert "| 8 | 4 | forward | eager | 5 | 80.0 | 30.0 | 80.0 | device |" in text
    assert "| 8 | 4 | forward | cuda | 5 | 40.0 | 90.0 | 90.0 | host |" in text


def test_adapter_configs_sweep_times_candidates_and_restores_the_tables():
    """benchmarks/adapter_configs.py (the GPU sweep of the whole-adapter kernels' block tables) at a tiny size under
    the interpreter: the recorded configuration and one candidate per phase, a JSON line each, tables unchanged."""
    import copy
    import io
    import time

    adapter_fused = pytest.importorskip("fastadapter.kernels.adapter_fused")
    configs = benchmarks_module("adapter_configs")
    tables = copy.deepcopy((adapter_fused.FORWARD_BLOCKS, adapter_fused.BACKWARD_BLOCKS))
    out = io.StringIO()
    winners = configs.sweep(9, 64, 16, torch.float32, torch.device("cpu"), time.monotonic() + 300, 1, out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["phase"] for line in lines] == ["forward"] * 2 + ["backward"] * 2
    assert all(line["us"] > 0 for line in lines) and set(winners) == {"forward", "backward"}
    assert [tuple(line["config"]) for line in lines[::2]] == [tables[0][True][16], tables[1][True][16]]
    assert (adapter_fused.FORWARD_BLOCKS, adapter_fused.BACKWARD_BLOCKS) == tables


def test_every_mode_steps_with_fused_adamw():
    """One optimizer for every mode and pair: fused AdamW over exactly the trainable parameters (PyTorch's
    default AdamW on CPU took 5x longer for (a)'s 138 M parameters and would be weighed against (a))."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    optimizer = bench.make_optimizer(model)
    assert optimizer.defaults["fused"] and isinstance(optimizer, torch.optim.AdamW)
    assert [p for group in optimizer.param_groups for p in group["params"]] == list(model[1].parameters())


def test_step_phases_script_runs():
    """benchmarks/step_phases.py (forward, backward and optimizer time per mode) at a tiny size."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parents[1] / "benchmarks" / "step_phases.py"
    done = subprocess.run([sys.executable, str(script), "--modes", "a,b-text", "--steps", "1", "--batch", "1",
                           "--image-size", "32"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "fused AdamW" in done.stdout
    rows = {line.split("|")[1].strip(): line for line in done.stdout.splitlines() if line.startswith("| a") or
            line.startswith("| b-text")}
    assert rows.keys() == {"a", "b-text"}
    for line in rows.values():
        forward, backward, optimizer, step = (float(v) for v in line.split("|")[3:7])
        assert min(forward, backward, optimizer) > 0 and step == pytest.approx(forward + backward + optimizer, abs=2)


def test_measurements_run_in_fresh_processes(monkeypatch):
    """Each measurement gets its own process (its own peak memory): on CPU forked from a server with torch and
    transformers imported, on CUDA spawned (no library's import may have touched CUDA before a fork)."""
    import multiprocessing
    import os

    methods = []
    real = multiprocessing.get_context

    def recording(method):
        methods.append(method)
        return real(method)

    monkeypatch.setattr(steps.multiprocessing, "get_context", recording)
    for device in ("cpu", "cuda"):
        assert steps.in_fresh_process(device, os.getpid) != os.getpid()
    assert methods == ["forkserver", "spawn"]
