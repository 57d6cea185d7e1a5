"""The project's shape: the linter, file and function sizes, and what `import fastadapter` pulls in."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = [*sorted((ROOT / "fastadapter").rglob("*.py")), *sorted((ROOT / "kernels").rglob("*.py"))]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
LINE_LIMIT = 120  # ruff's, from pyproject.toml; C++ and CUDA are held to it here


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cpp_and_cuda_style():
    problems = []
    for path in sorted((ROOT / "csrc").rglob("*")):
        if path.suffix not in (".cpp", ".h", ".cu", ".cuh"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            where = f"{path.relative_to(ROOT)}:{number}"
            if len(line) > LINE_LIMIT:
                problems.append(f"{where}: {len(line)} characters")
            if "\t" in line or line != line.rstrip():
                problems.append(f"{where}: a tab or trailing whitespace")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: str(p.relative_to(ROOT)))
def test_library_files_and_functions_stay_small(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MAX_FILE_LINES, f"{path.name}: over {MAX_FILE_LINES} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{path.name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_import_adds_nothing_of_the_bench():
    """`import fastadapter` adds no matplotlib, no PIL drawing, no bench or training module to what torch and
    transformers' BLIP import (torch imports tqdm; BLIP imports PIL.Image)."""
    script = ("import sys, torch, transformers.models.blip.modeling_blip, transformers.models.blip.modeling_blip_text\n"
              "before = set(sys.modules)\n"
              "import fastadapter\n"
              "print('\\n'.join(sorted(set(sys.modules) - before)))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    added = done.stdout.split()
    banned = [m for m in added if m.split(".")[0] == "matplotlib" or m.startswith("PIL.ImageDraw")
              or m.split(".")[:2] in (["fastadapter", "bench"], ["fastadapter", "train"], ["fastadapter", "kernels"])
              or m == "triton"]
    assert not banned, f"import fastadapter pulled in {banned}"
    assert "fastadapter.ops.adapter" in added  # the check itself sees fastadapter's modules


def test_nothing_refers_to_a_file_outside_the_repository():
    markers = ("DESIGN" + ".md", "../" + "shared")  # split, so that this file does not match itself
    outside = []
    for path in ROOT.rglob("*"):
        skipped = {".git", ".venv", "build", ".benchmarks"} & set(path.parts)
        if path.is_dir() or skipped or path.suffix not in (".py", ".md", ".cpp", ".h", ".cu", ".cuh", ".sh", ".toml"):
            continue
        if any(marker in path.read_text(errors="replace") for marker in markers):
            outside.append(str(path.relative_to(ROOT)))
    assert not outside, f"these refer to files outside the repository: {outside}"


def test_pytest_benchmark_from_the_root_collects_the_suites():
    """`pytest --benchmark` (the design card's command) runs the benchmark suites, not the tests."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--benchmark", "--collect-only", "-q"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert collected and all(line.startswith("benchmarks/") for line in collected)
