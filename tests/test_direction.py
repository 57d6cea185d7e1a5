"""The bench report's verdict on the paper's direction: each adapter mode against (a), from what was measured."""

import math

import pytest
import torch

from fastadapter.bench import direction, measure


def _result(steps, peak, trainable=1000, saved=2**20, label="a mode"):
    return {"label": label, "step_s": sorted(steps)[len(steps) // 2], "step_times_s": steps, "peak_bytes": peak,
            "peak_kind": "peak RSS (process)", "trainable": trainable, "saved_bytes": saved,
            "phases_s": {"forward": 0.5, "backward": 0.3, "optimizer": 0.1}}


def _report(results, paired=None):
    return {"preset": {"dtype": "float32"}, "results": results, "paired": paired or {}}


def test_separation_p_is_the_exact_rank_test():
    assert direction.separation_p(4, 4) == pytest.approx(2 / 70)
    assert direction.separation_p(3, 3) == pytest.approx(0.1)
    assert direction.separation_p(1, 1) == 1.0
    # by enumeration: of all orders of 3 + 4 steps, the share with one side entirely first
    assert direction.separation_p(3, 4) == pytest.approx(2 / math.comb(7, 3))


@pytest.mark.parametrize("ours, verdict", [
    ([1.0, 1.1, 1.2, 1.05], "holds (unpaired)"),  # every step faster than every step of (a)
    ([3.0, 3.1, 3.2, 3.05], "does not hold (unpaired)"),
    ([1.0, 2.5, 1.2, 1.05], "not resolved"),  # overlaps (a)'s steps
])
def test_time_from_separate_processes(ours, verdict):
    report = _report({"a": _result([2.0, 2.1, 2.2, 2.05], 10), "b": _result(ours, 5)})
    judged = direction.time_verdict(report, "b")
    assert judged["verdict"] == verdict and judged["from"] == "separate"
    assert judged["ratio"] == pytest.approx((sorted(ours)[1] + sorted(ours)[2]) / (2.05 + 2.1))


def test_too_few_separate_steps_decide_nothing():
    report = _report({"a": _result([2.0, 2.1], 10), "b": _result([1.0, 1.1], 5)})
    judged = direction.time_verdict(report, "b")
    assert judged["verdict"] == "not resolved" and "too few" in judged["evidence"]


def test_sign_test_p_is_exact():
    assert direction.sign_test_p(0, 6) == pytest.approx(2 / 64)  # the fewest pairs that can decide at 0.05
    assert direction.sign_test_p(6, 6) == pytest.approx(2 / 64)
    assert direction.sign_test_p(0, 4) == pytest.approx(0.125)
    assert direction.sign_test_p(7, 8) == pytest.approx(2 * 9 / 256)
    assert direction.sign_test_p(4, 8) == 1.0


@pytest.mark.parametrize("interval, faster, pairs, verdict", [
    ((0.6, 0.7), 40, 40, "holds"), ((1.1, 1.2), 0, 40, "does not hold"), ((0.95, 1.04), 20, 40, "not resolved"),
    ((0.6, 0.7), 4, 4, "not resolved"),  # every pair faster, but 4 pairs cannot decide (sign test p = 0.125)
    ((1.1, 1.2), 1, 8, "not resolved"),  # 7 of 8 slower: p = 0.07
])
def test_a_paired_run_decides_over_separate_processes(interval, faster, pairs, verdict):
    # the separate processes alone would say "holds"; the paired run is what counts
    paired = {"b/a": {"ratio": sum(interval) / 2, "steps_each": pairs,
                      "pairs_wall_time": {"median_ci95": list(interval), "numerator_faster": faster, "pairs": pairs},
                      "phases_s": {"b": {"forward": 1.0, "backward": 2.0, "optimizer": 0.01},
                                   "a": {"forward": 0.9, "backward": 1.0, "optimizer": 0.2}}}}
    report = _report({"a": _result([2.0, 2.1, 2.2, 2.05], 10), "b": _result([1.0, 1.1, 1.2, 1.05], 5)}, paired)
    judged = direction.time_verdict(report, "b")
    assert judged["ratio"] == sum(interval) / 2 and judged["verdict"] == verdict and judged["from"] == "paired"
    assert f"{pairs} pairs of steps, (b) faster in {faster} (sign test p = " in judged["evidence"]
    if pairs == 40 and faster in (0, 40):
        assert "(sign test p = 2e-12)" in judged["evidence"]  # not rounded to 0.000
    # why: the phases come from the paired run too
    assert "backward 2000 against 1000 ms (+1000)" in direction.why(report, "b")


def test_verdicts_memory_why_and_report_section():
    results = {"a": _result([2.0, 2.1, 2.2, 2.05], 10, trainable=137_881_148, saved=43 * 2**20),
               "b": _result([3.0, 3.1, 3.2, 3.05], 5, trainable=9_474_048, saved=220 * 2**20,
                            label="eager adapters, every tower"),
               "b-text": _result([1.0, 1.1, 1.2, 1.05], 12, label="eager adapters, text decoder"),
               "c": {"note": "failed: out of memory", "failed": True}, "d": {"note": "not measured"}}
    report = _report(results)
    judged = direction.verdicts(report)
    assert judged.keys() == {"b", "b-text"}  # failed and unmeasured modes are not judged
    assert judged["b"]["memory"] == {"ratio": 0.5, "verdict": "holds", "evidence": "peak RSS (process)"}
    assert judged["b-text"]["memory"]["verdict"] == "does not hold"  # 1.2x (a)'s peak
    assert judged["b"]["time"]["verdict"] == "does not hold (unpaired)"
    assert "vision encoder, which (a) freezes and skips" in judged["b"]["why"]
    assert "skips the backward pass through the vision encoder" in judged["b-text"]["why"]
    # grad + two AdamW moments in float32: 12 bytes per trained parameter
    assert f"{12 * 137_881_148 / 2**30:.2f} GiB" in direction.state(results["a"], "float32")
    assert f"{6 * 9_474_048 / 2**20:.1f} MiB" in direction.state(results["b"], "bfloat16")
    report["direction"] = judged
    text = "\n".join(direction.markdown(report))
    assert "| b | 0.500 | holds | 1.482 | does not hold (unpaired) |" in text
    assert "`--pairs b/a,b-text/a --steps 20`" in text  # judged from separate processes: say how to pair them


def test_no_verdict_without_mode_a():
    report = _report({"b": _result([1.0], 5)})
    assert direction.verdicts(report) == {}
    report["direction"] = {}
    assert "Not judged" in "\n".join(direction.markdown(report))


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 64)

    def forward(self, x):
        return type("Output", (), {"loss": self.linear(x).square().mean()})()


def test_a_timed_step_is_split_into_its_phases():
    model = _Model()
    optimizer = torch.optim.AdamW(model.parameters())
    before = model.linear.weight.detach().clone()
    step = measure.timed_train_step(model, {"x": torch.randn(32, 64)}, optimizer)
    assert not torch.equal(before, model.linear.weight) and model.linear.weight.grad is None  # stepped, zeroed
    assert step.phases.keys() == set(measure.STEP_PHASES) and min(step.phases.values()) > 0
    assert sum(step.phases.values()) <= step.seconds < sum(step.phases.values()) + 0.05
    assert step.loss.requires_grad is False


def test_on_cuda_the_phases_come_from_events(monkeypatch):
    """The GPU path of the split without a GPU: events recorded between the phases (no synchronisation but the
    step's last), their elapsed times in ms turned into seconds, in order."""
    clock = iter(range(100))
    recorded = []

    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing

        def record(self):
            self.at = next(clock)  # one tick after the event before; a tick is 250 ms below
            recorded.append(self)

        def elapsed_time(self, end):
            return (end.at - self.at) * 250.0

    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(measure, "_synchronize", syncs.append)
    model = _Model()
    step = measure.timed_train_step(model, {"x": torch.randn(4, 64)}, torch.optim.AdamW(model.parameters()), "cuda")
    assert len(recorded) == 4 and syncs == ["cuda"]
    assert step.phases == {"forward": 0.25, "backward": 0.25, "optimizer": 0.25}


def test_fused_against_eager_adapters():
    """fastadapter's own target: (c) at least as fast as (b) and saving less for backward, judged like the rest."""
    results = {"b": _result([2.0, 2.1, 2.2, 2.05], 10, saved=200),
               "c": _result([2.0, 2.1, 2.2, 2.05], 10, saved=190),
               "b-text": _result([1.0, 1.1, 1.2, 1.05], 5, saved=50),
               "c-text": _result([2.0, 2.1, 2.2, 2.3], 5, saved=60)}
    paired = {"c/b": {"ratio": 0.99, "steps_each": 6,
                      "pairs_wall_time": {"median_ci95": [0.95, 1.02], "numerator_faster": 4, "pairs": 6}}}
    judged = direction.fused_verdicts(_report(results, paired))
    assert judged["c/b"]["time"]["verdict"] == "no difference resolved" and judged["c/b"]["time"]["from"] == "paired"
    assert judged["c/b"]["saved"] == {"ratio": 0.95, "verdict": "less"}
    # no paired run: separate processes, marked as such
    assert judged["c-text/b-text"]["time"]["verdict"] == "slower (unpaired)"
    assert judged["c-text/b-text"]["saved"]["verdict"] == "not less"
    text = "\n".join(direction.fused_markdown({"fused_against_eager": judged}))
    assert "| c/b | 0.990 | no difference resolved | one process, 6 pairs" in text
    assert direction.fused_markdown({"fused_against_eager": {}}) == []


def _pair(ratio, interval, faster, pairs, numerator, phases=None):
    out = {"ratio": ratio, "steps_each": pairs,
           "pairs_wall_time": {"median_ci95": list(interval), "numerator_faster": faster, "pairs": pairs}}
    if phases:
        out["phases_s"] = {numerator: phases, "a": {"forward": 0.9, "backward": 1.0, "optimizer": 0.2}}
    return out


def test_a_paired_run_alone_is_judged_on_time():
    """`--modes c --pairs c/b` or `--modes b --pairs b/a`: the pair's own side has no run, so time is judged from
    the pair and memory and saved bytes say they were not measured, instead of no verdict at all."""
    results = {"c": _result([2.0, 2.1, 2.2, 2.05], 10, saved=190, label="fused adapters, every tower")}
    paired = {"c/b": _pair(0.99, (0.95, 1.02), 50, 100, "c"),
              "b/a": _pair(1.2, (1.15, 1.25), 0, 20, "b", {"forward": 1.0, "backward": 2.0, "optimizer": 0.01}),
              "c-text/b-text": {"failed": "RuntimeError: out of memory"}}
    report = _report(results, paired)
    fused = direction.fused_verdicts(report)
    assert fused.keys() == {"c/b"}  # a failed pair judges nothing
    assert fused["c/b"]["time"]["verdict"] == "no difference resolved" and fused["c/b"]["time"]["from"] == "paired"
    assert fused["c/b"]["saved"] == {"ratio": None, "verdict": "not measured (needs --modes c,b)"}
    judged = direction.verdicts(report)
    assert judged.keys() == {"b"}  # (c) ran, but neither (a) nor a c/a pair did
    assert judged["b"]["memory"] == {"ratio": None, "verdict": "not measured", "evidence": "needs --modes a,b"}
    assert judged["b"]["time"]["verdict"] == "does not hold" and judged["b"]["time"]["from"] == "paired"
    assert "backward 2000 against 1000 ms (+1000)" in judged["b"]["why"]
    assert "trains" not in judged["b"]["why"]  # what (b) trains and saves comes from its own run, absent here
    report.update(direction=judged, fused_against_eager=fused)
    text = "\n".join(direction.markdown(report) + direction.fused_markdown(report))
    assert "| b |  | not measured | 1.200 | does not hold | one process, 20 pairs" in text
    assert "Why, against (a):\n- (b): per step forward 1000 against 900 ms" in text
    assert "| c/b | 0.990 | no difference resolved | one process, 100 pairs of steps, (c) faster in 50" in text
    assert "|  | not measured (needs --modes c,b) |" in text
