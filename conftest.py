"""`pytest --benchmark` from the repository root: the benchmark suites (benchmarks/, benchmark-only) ending with
their throughput and memory table (benchmarks/suite_table.py over the run's summarised extra_info). Every
--benchmark-* option of pytest-benchmark keeps its own meaning."""

import importlib.metadata
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent


def pytest_addoption(parser):
    parser.getgroup("benchmark").addoption(
        "--benchmark", action="store_true", default=False,
        help="run the benchmark suites under benchmarks/ (only the benchmarks) and end with their time and memory "
             "table")


def pytest_configure(config):
    if not config.getoption("benchmark"):
        return
    if config.args_source != config.ArgsSource.ARGS:  # no paths given: the suites, not the tests
        config.args = [str(ROOT / "benchmarks")]
    config.option.benchmark_only = True
    if getattr(config.option, "benchmark_json", None) is None:  # a file pytest-benchmark writes, to table
        latest = ROOT / ".benchmarks" / "latest.json"  # kept: the run's data (.benchmarks/ is git-ignored)
        latest.parent.mkdir(exist_ok=True)
        latest.unlink(missing_ok=True)  # a failed run must not table an earlier one's data
        old_plugin = int(importlib.metadata.version("pytest-benchmark").split(".")[0]) < 5  # it took an open file
        config.option.benchmark_json = open(latest, "wb") if old_plugin else str(latest)
        config._fastadapter_table_json = latest
    else:  # pytest-benchmark 4 hands an open file, 5 a path
        given = config.option.benchmark_json
        config._fastadapter_table_json = Path(getattr(given, "name", given))


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables: the run ends with this one
def pytest_terminal_summary(terminalreporter, config):
    path = getattr(config, "_fastadapter_table_json", None)
    if path is None:
        return
    flush = getattr(config.option.benchmark_json, "flush", None)
    if flush is not None:
        flush()
    if not path.exists() or not path.stat().st_size:
        return
    spec = importlib.util.spec_from_file_location("suite_table", ROOT / "benchmarks" / "suite_table.py")
    suite_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite_table)
    terminalreporter.write_sep("=", "throughput and memory (benchmarks/suite_table.py)")
    terminalreporter.write_line(suite_table.table(path))
