"""benchmarks/results/: every run record in the one format, and the page generated from them, one screen long."""

import json

import pytest
from helpers import benchmarks_module

result_file = benchmarks_module("result_file")
results_page = benchmarks_module("results_page")


def test_every_record_is_valid_and_the_page_is_generated_from_them():
    records = results_page.load_all()
    assert records, "no run records"
    text = results_page.page(records)
    assert results_page.PAGE.read_text() == text, "benchmarks/results/README.md is stale: run results_page.py"
    assert len(text.splitlines()) <= 150


def test_latest_record_per_machine_and_claim_wins(tmp_path):
    old = result_file.record("op speed", "cmd old", [result_file.figure("fused/eager", 0.9)], "fused wins")
    new = {**old, "date": "2999-01-01", "command": "cmd new", "figures": [result_file.figure("fused/eager", 0.8)]}
    result_file.write(old, tmp_path / "a.json")
    result_file.write(new, tmp_path / "b.json")
    text = results_page.page(results_page.load_all(tmp_path))
    assert "cmd new" in text and "cmd old" not in text and "fused/eager 0.8x" in text
    for key in ("command", "commit", "machine", "versions", "date", "figures"):
        assert key in json.loads((tmp_path / "a.json").read_text())


def test_a_record_without_its_command_is_refused(tmp_path):
    bad = result_file.record("op speed", "cmd", [], "none")
    del bad["command"]
    with pytest.raises(ValueError, match="missing \\['command'\\]"):
        result_file.write(bad, tmp_path / "bad.json")


def test_a_bench_report_becomes_records_with_its_own_date():
    report = json.loads((result_file.RUNS.parent / "notes" / "cpu-2026-11-29" / "bench-fresh-clone-1889e5c" /
                         "bench.json").read_text())
    records = {r["claim"]: r for r in result_file.from_bench(report, "fastadapter bench")}
    fused = records["fastadapter bench cpu preset: (c)/(b)"]
    assert fused["date"] == report["machine"]["date"] and fused["command"] == "fastadapter bench"
    assert fused["figures"][0]["value"] == report["fused_against_eager"]["c/b"]["time"]["ratio"]
    assert "(b)/(a)" in " ".join(records) and all(result_file.check(r) for r in records.values())


def test_suite_runs_become_one_record_that_says_where_fused_loses():
    runs = sorted((result_file.RUNS.parent / "notes" / "gpu-h200-2026-11-28").glob("suites-*.json"))
    data = result_file.from_suites(runs, "benchmarks/gpu/run.sh OUT suites")
    assert result_file.check(data) and len(data["figures"]) == 18
    losses = sum(f["value"] >= 1 for f in data["figures"])
    assert losses and data["verdict"].endswith(f"fused does not win in {losses}")


def test_adapter_gpu_lines_become_a_record_per_shape_by_the_faster_fused_backend(tmp_path):
    """benchmarks/adapter_gpu.py's JSON lines: the faster of triton and cuda by device time, against each peer."""
    def row(impl, phase, device, saved=None, launches=3):
        return {"tokens": 1280, "r": 256, "dtype": "bfloat16", "phase": phase, "implementation": impl,
                "device_us": device, "wall_us": device + 5, "host_us": 20.0, "launches": launches,
                **({"saved_bytes": saved} if saved else {})}

    rows = [row("eager", "forward", 20.0, launches=6), row("eager", "forward_backward", 60.0, 300, launches=15),
            row("triton", "forward", 8.0, launches=1), row("triton", "forward_backward", 25.0, 200, launches=5),
            row("cuda", "forward", 9.0), row("cuda", "forward_backward", 24.0, 200, launches=8),
            row("compile", "forward_backward", 40.0, 250)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [data] = result_file.from_adapter_gpu([tmp_path / "a.jsonl"], "benchmarks/adapter_gpu.py")
    figures = {f["name"]: f["value"] for f in data["figures"]}
    assert data["claim"] == "adapter op T=1280 r=256 bfloat16: fused vs eager" and result_file.check(data)
    assert figures["forward_backward device (cuda)"] == 24.0 and figures["forward_backward cuda/eager"] == 0.4
    assert figures["forward_backward cuda/compile"] == 0.6 and figures["forward cuda/eager"] == 0.45
    assert figures["saved for backward cuda/eager"] == 0.667 and figures["forward_backward launches (eager)"] == 15
    assert figures["forward_backward steady wall (cuda)"] == 29.0 and data["verdict"].startswith("cuda faster")
