"""The one result-file format of fastadapter's measurements: a JSON file per run, under benchmarks/results/runs/.

    {"format": "fastadapter-result-1", "claim": "adapter op, CPU: fused vs eager, fwd+bwd",
     "machine": "cpu-2core-avx512", "machine_detail": "...", "date": "2026-12-01", "commit": "abc1234",
     "command": "python benchmarks/adapter_targets.py --tokens 8192", "versions": {"torch": "2.14.1", ...},
     "figures": [{"name": "fused/eager", "value": 0.75, "unit": "x", "better": "lower"}, ...],
     "verdict": "fused wins" | "fused does not win: ..." | free text, "note": "optional, one line"}

A claim is what a figure is evidence for; results_page.py keeps the latest run per machine and claim. Scripts
write a record with record() + write(); `fastadapter bench` reports convert with from_bench().
"""

from __future__ import annotations

import datetime
import json
import platform
import re
import sys
from pathlib import Path

from fastadapter.bench.report import source_commit

FORMAT = "fastadapter-result-1"
RUNS = Path(__file__).resolve().parent / "results" / "runs"
REQUIRED = ("format", "claim", "machine", "date", "commit", "command", "versions", "figures", "verdict")


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "triton"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        out[name] = getattr(module, "__version__", "?")
    return out


def machine() -> tuple[str, str]:
    """(kind, detail): the kind names the machine class results are grouped by."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        return "gpu-" + name.split()[-1].lower(), f"{name}, torch {torch.__version__}"
    model = _cpu_model()
    slug = "-".join(re.findall(r"[a-z0-9]+", model.lower().replace("(r)", "").replace("(tm)", "")))
    return (f"cpu-{torch.get_num_threads()}thread-{slug}", f"{model}, {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def figure(name: str, value: float, unit: str = "x", better: str = "lower") -> dict:
    return {"name": name, "value": value, "unit": unit, "better": better}


def record(claim: str, command: str, figures: list[dict], verdict: str, note: str = "") -> dict:
    kind, detail = machine()
    return {"format": FORMAT, "claim": claim, "machine": kind, "machine_detail": detail,
            "date": datetime.date.today().isoformat(), "commit": source_commit(), "command": command,
            "versions": versions(), "figures": figures, "verdict": verdict, "note": note}


def check(data: dict, where: str = "a result") -> dict:
    missing = [key for key in REQUIRED if key not in data]
    if data.get("format") != FORMAT or missing:
        raise ValueError(f"{where} is not a {FORMAT} record (missing {missing or ['format']})")
    for f in data["figures"]:
        if not {"name", "value", "unit"} <= set(f):
            raise ValueError(f"{where}: figure {f} lacks a name, value or unit")
    return data


def write(data: dict, path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(check(data), indent=1) + "\n")
    tmp.replace(path)
    return path


def load(path: Path) -> dict:
    return check(json.loads(path.read_text()), str(path))


def from_bench(report: dict, command: str) -> list[dict]:
    """`fastadapter bench`'s bench.json as result records: one per verdict it reached (each adapter mode against
    (a), each fused/eager pair), with the time ratio it was judged from and the memory figures."""
    records = []
    for name, judged in [*((f"{m}/a", v) for m, v in report.get("direction", {}).items()),
                         *report.get("fused_against_eager", {}).items()]:
        time = judged["time"]
        figures = [figure("step time", time["ratio"])] if time.get("ratio") is not None else []
        figures += [figure(f"{key} ratio", judged[key]["ratio"]) for key in ("memory", "saved")
                    if key in judged and judged[key].get("ratio") is not None]
        verdict = "; ".join(f"{key} {judged[key]['verdict']}" for key in ("time", "memory", "saved") if key in judged)
        if name in report.get("fused_against_eager", {}) and time.get("verdict") != "faster":
            verdict = "fused does not win on time: " + verdict
        data = record(f"fastadapter bench {report['preset_name']} preset: ({name.replace('/', ')/(')})", command,
                      figures, verdict)
        run_on = report.get("machine", {})  # the run's own date, commit and versions, not this conversion's
        data.update(date=run_on.get("date", data["date"]), commit=run_on.get("commit", "unknown"),
                    versions={k: run_on[k] for k in ("python", "torch", "transformers") if k in run_on})
        records.append(data)
    return records


def from_suites(paths: list[Path], command: str) -> dict:
    """The benchmark suites' pytest-benchmark JSON files (suite_table.py merges them) as one record: the best fused
    implementation's time against eager's in every case that both ran."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("suite_table", Path(__file__).with_name("suite_table.py"))
    suite_table = importlib.util.module_from_spec(spec)  # a sibling script, wherever this one is imported from
    spec.loader.exec_module(suite_table)
    cases, _ = suite_table._cases(paths)
    figures = []
    for group, by_impl in sorted(cases.items()):
        fused = [by_impl[i]["ms"] for i in suite_table.FUSED if i in by_impl]
        if fused and "eager" in by_impl:
            figures.append(figure(f"{group}: best fused / eager", round(min(fused) / by_impl["eager"]["ms"], 3)))
    wins = sum(f["value"] < 1 for f in figures)
    verdict = (f"fused faster in {wins} of {len(figures)} cases" + ("" if wins == len(figures) else
               f"; fused does not win in {len(figures) - wins}"))
    return record("adapter op suites: best fused vs eager per case", command, figures, verdict)


def from_adapter_gpu(paths: list[Path], command: str) -> list[dict]:
    """benchmarks/adapter_gpu.py's JSON lines as one record per shape: the faster fused backend (what `auto` should
    pick) against eager and torch.compile, by device time where the run took it (a GPU), else by wall time."""
    shapes: dict[tuple, dict] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                shape = shapes.setdefault((row["tokens"], row["r"], row["dtype"]), {})
                shape[(row["phase"], row["implementation"])] = row
    records = []
    for (tokens, r, dtype), rows in sorted(shapes.items()):
        both = "forward_backward"
        key = "device_us" if all("device_us" in row for row in rows.values()) else "wall_us"
        fused = [i for i in ("triton", "cuda", "cpu") if (both, i) in rows]
        if not fused or (both, "eager") not in rows:
            continue
        best = min(fused, key=lambda i: rows[(both, i)][key])
        figures = [figure(f"{phase} {key[:-3]} ({best})", round(rows[(phase, best)][key], 1), "us")
                   for phase in ("forward", both) if (phase, best) in rows]
        figures += [figure(f"{phase} {best}/{peer}", round(rows[(phase, best)][key] / rows[(phase, peer)][key], 3))
                    for phase in ("forward", both) for peer in ("eager", "compile", "compile-max-autotune")
                    if (phase, peer) in rows and (phase, best) in rows]
        if "wall_us" in rows[(both, best)] and key != "wall_us":
            figures.append(figure(f"{both} steady wall ({best})", round(rows[(both, best)]["wall_us"], 1), "us"))
        if rows[(both, "eager")].get("saved_bytes"):
            figures.append(figure(f"saved for backward {best}/eager",
                                  round(rows[(both, best)]["saved_bytes"] / rows[(both, "eager")]["saved_bytes"], 3)))
        figures += [figure(f"{phase} launches ({impl})", rows[(phase, impl)]["launches"], "kernels")
                    for phase in ("forward", both) for impl in (best, "eager")
                    if "launches" in rows.get((phase, impl), {})]
        ratio = rows[(both, best)][key] / rows[(both, "eager")][key]
        verdict = (f"{best} {'faster' if ratio < 1 else 'not faster'} than eager forward+backward ({ratio:.2f}x by "
                   f"{key[:-3]} time)")
        against = " and max-autotune" if (both, "compile-max-autotune") in rows else ""  # a run of its own
        records.append(record(f"adapter op T={tokens} r={r} {dtype}: fused vs eager{against}", command, figures,
                              verdict))
    return records


def _slug(data: dict) -> str:
    claim = "".join(c if c.isalnum() else "-" for c in data["claim"]).strip("-").lower()
    return f"{data['machine']}-{data['date']}-{claim}.json"


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description="write result records from a bench report or suite runs")
    parser.add_argument("kind", choices=("bench", "suites", "adapter"), help="bench: a fastadapter bench bench.json; "
                        "suites: pytest-benchmark JSON files of benchmarks/test_adapter.py; adapter: "
                        "benchmarks/adapter_gpu.py JSON lines")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--command", required=True, help="the command that made the files, as run")
    parser.add_argument("--out", default=str(RUNS), help="the folder for the records (default: results/runs/)")
    args = parser.parse_args()
    if args.kind == "bench":
        records = from_bench(json.loads(Path(args.files[0]).read_text()), args.command)
    elif args.kind == "adapter":
        records = from_adapter_gpu([Path(f) for f in args.files], args.command)
    else:
        records = [from_suites([Path(f) for f in args.files], args.command)]
    for data in records:
        print(write(data, Path(args.out) / _slug(data)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
