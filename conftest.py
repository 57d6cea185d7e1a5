"""`pytest --benchmark` from the repository root: the benchmark suites (benchmarks/, benchmark-only) ending with
their throughput and memory table (benchmarks/suite_table.py over the run's summarised extra_info). Every
--benchmark-* option of pytest-benchmark keeps its own meaning."""

import importlib.util
import tempfile
from pathlib import Path

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
        handle = tempfile.NamedTemporaryFile(prefix="fastadapter-benchmark-", suffix=".json", delete=False)
        config.option.benchmark_json = handle
        config._fastadapter_table_json = Path(handle.name)
    else:
        config._fastadapter_table_json = Path(config.option.benchmark_json.name)


def pytest_terminal_summary(terminalreporter, config):
    path = getattr(config, "_fastadapter_table_json", None)
    if path is None:
        return
    config.option.benchmark_json.flush()
    if not path.stat().st_size:
        return
    spec = importlib.util.spec_from_file_location("suite_table", ROOT / "benchmarks" / "suite_table.py")
    suite_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite_table)
    terminalreporter.write_sep("=", "throughput and memory (benchmarks/suite_table.py)")
    terminalreporter.write_line(suite_table.table(path))
