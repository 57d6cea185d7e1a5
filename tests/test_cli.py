"""The command line and the README's commands."""

import pathlib
import subprocess
import sys

import fastadapter
from fastadapter import cli
from fastadapter.bench import demo

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    command = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert command in (ROOT / "README.md").read_text()


def test_backends_command(capsys):
    assert cli.main(["backends"]) == 0
    out = capsys.readouterr().out
    for name, info in fastadapter.backends().items():
        assert name in out and info.reason in out


def test_demo_runs_and_fused_matches_eager(capsys):
    results = demo.run(steps=2, batch_size=1, image_size=96, bottleneck=16)
    eager, fused = results
    assert eager["trainable"] == fused["trainable"] == 24 * (2 * 768 * 16 + 3 * 16 + 768)
    assert len(eager["losses"]) == 2
    for a, b in zip(eager["losses"], fused["losses"]):
        assert abs(a - b) <= 1e-4 * abs(a)
    out = capsys.readouterr().out
    assert "161,323,580" in out and "a glance, not a measurement" in out


def test_bad_arguments_are_refused():
    result = subprocess.run([sys.executable, "-m", "fastadapter.cli", "demo", "--steps", "0"], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "--steps must be at least 1" in result.stderr
    result = subprocess.run([sys.executable, "-m", "fastadapter.cli", "bench", "--image-size", "15"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "--image-size must be at least 16: BLIP cuts images into 16-px" in result.stderr


def test_bench_refuses_an_unrunnable_request_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fastadapter.cli", "bench", "--model", str(tmp_path / "nowhere"),
                             "--out", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"fastadapter bench: no checkpoint at {tmp_path / 'nowhere'}" in result.stderr
