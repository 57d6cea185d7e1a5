"""benchmarks/suite_table.py: the suites' JSON files as one table, with the ratios the GPU run is read by."""

import json

from helpers import benchmarks_module

suite_table = benchmarks_module("suite_table")


def _suite(path, cases, floors=None, gemms=None):
    """A pytest-benchmark JSON file: cases are (group, impl, wall median s, CUDA-event ms or None, saved bytes);
    floors: group -> the roofline floor in ms its cases recorded; gemms: (group, impl) -> the GEMMs' ms it recorded."""
    floors, gemms = floors or {}, gemms or {}
    benchmarks = [{"group": group, "stats": {"median": wall},
                   "extra_info": {"impl": impl, "saved_for_backward_bytes": saved,
                                  **({"cuda_event_median_ms": event} if event is not None else {}),
                                  **({"floor_ms": floors[group]} if group in floors else {}),
                                  **({"gemms_ms": gemms[group, impl]} if (group, impl) in gemms else {})}}
                  for group, impl, wall, event, saved in cases]
    benchmarks.append({"group": "other", "stats": {"median": 1.0}, "extra_info": {}})  # not an adapter case
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return path


def test_gpu_runs_merge_and_packed_kernels_are_set_against_general_ones(tmp_path):
    fwd, bwd = "adapter cuda images r=256 forward", "adapter cuda images r=256 backward"
    files = [_suite(tmp_path / "eager.json", [(fwd, "eager", 9.0, 0.100, 2**20), (bwd, "eager", 9.0, 0.500, 2**20)]),
             _suite(tmp_path / "cuda.json", [(fwd, "cuda", 9.0, 0.250, 2**19), (bwd, "cuda", 9.0, 0.400, 2**19)]),
             _suite(tmp_path / "packed.json", [(fwd, "cuda_packed", 9.0, 0.080, 2**19)])]
    lines = suite_table.table(*files).splitlines()
    assert lines[0] == ("| case | eager: ms (saved MiB) | cuda: ms (saved MiB) | cuda_packed: ms (saved MiB) | "
                        "best fused / eager | cuda_packed / cuda |")
    assert lines[1] == "|---|---:|---:|---:|---:|---:|"
    # CUDA-event medians, not the wall clock; the best fused is the packed kernel where it ran
    assert lines[2] == f"| {bwd} | 0.500 (1.0) | 0.400 (0.5) | — | 0.80 | — |"
    assert lines[3] == f"| {fwd} | 0.100 (1.0) | 0.250 (0.5) | 0.080 (0.5) | 0.80 | 0.32 |"
    assert len(lines) == 4  # the case without an implementation is left out


def test_cpu_runs_have_no_packed_column(tmp_path):
    case = "adapter cpu captions r=64 forward_backward"
    path = _suite(tmp_path / "cpu.json", [(case, "eager", 0.004, None, 3 * 2**20), (case, "cpu", 0.003, None, 2**20),
                                          (case, "compile", 0.005, None, 2 * 2**20)])
    lines = suite_table.table(path).splitlines()
    assert "cuda_packed / cuda" not in lines[0] and lines[0].endswith("| best fused / eager |")
    assert lines[2] == f"| {case} | 4.000 (3.0) | 5.000 (2.0) | 3.000 (1.0) | 0.75 |"


def test_the_roofline_floor_and_each_side_against_it(tmp_path):
    fwd, bwd = "adapter cuda images r=256 forward", "adapter cuda images r=256 backward"
    floors = {fwd: 0.020, bwd: 0.050}
    files = [_suite(tmp_path / "eager.json", [(fwd, "eager", 9.0, 0.100, 2**20), (bwd, "eager", 9.0, 0.500, 2**20)],
                    floors),
             _suite(tmp_path / "triton.json", [(fwd, "triton", 9.0, 0.060, 2**19)], floors)]
    lines = suite_table.table(*files).splitlines()
    assert lines[0] == ("| case | eager: ms (saved MiB) | triton: ms (saved MiB) | floor: ms | best fused / eager | "
                        "eager / floor | best fused / floor |")
    assert lines[1] == "|---|" + "---:|" * 6
    assert lines[2] == f"| {bwd} | 0.500 (1.0) | — | 0.050 | — | 10.00 | — |"
    assert lines[3] == f"| {fwd} | 0.100 (1.0) | 0.060 (0.5) | 0.020 | 0.60 | 5.00 | 3.00 |"


def test_the_gemms_alone_are_the_median_of_what_the_cases_recorded(tmp_path):
    """The GEMMs-alone column is the median of the floors each implementation's case recorded, and both sides are
    set against it."""
    case = "adapter cpu images r=64 forward"
    gemms = {(case, "eager"): 2.0, (case, "compile"): 9.0, (case, "cpu"): 1.0}  # compile's: timed in a burst
    path = _suite(tmp_path / "cpu.json", [(case, "eager", 0.006, None, 2**20), (case, "cpu", 0.003, None, 2**20),
                                          (case, "compile", 0.005, None, 2**20)], {case: 0.5}, gemms)
    lines = suite_table.table(path).splitlines()
    assert lines[0] == ("| case | eager: ms (saved MiB) | compile: ms (saved MiB) | cpu: ms (saved MiB) | floor: ms | "
                        "GEMMs: ms | best fused / eager | eager / floor | best fused / floor | eager / GEMMs | "
                        "best fused / GEMMs |")
    assert lines[1] == "|---|" + "---:|" * 10
    assert lines[2] == f"| {case} | 6.000 (1.0) | 5.000 (1.0) | 3.000 (1.0) | 0.500 | 2.000 | 0.50 | 12.00 | 6.00 | " \
                       "3.00 | 1.50 |"
