#!/usr/bin/env bash
# The GPU check, in one go: build, GPU tests, GPU benchmarks, `fastadapter bench --preset gpu`.
# For a GPU machine with no network that already has torch, triton and transformers (plus pytest,
# pytest-benchmark, safetensors, tqdm, matplotlib). Usage: benchmarks/gpu/run.sh OUT_DIR
# Each stage has a timeout (tests 120 s, suites 150 s, bench 140 s) so the whole stays near 8 minutes.
# Full logs and results go to OUT_DIR; a short summary is printed last. Budget: under 8 minutes on one H200.
set -uo pipefail
out=${1:?usage: benchmarks/gpu/run.sh OUT_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/../.."
start=$(date +%s)
stage() { printf '%-28s %s (%ss)\n' "$1" "$2" "$(( $(date +%s) - start ))" | tee -a "$out/summary.txt"; }
: > "$out/summary.txt"

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  || { echo "no CUDA device visible: this script is for the GPU machine" | tee -a "$out/summary.txt"; exit 1; }
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python - <<'PY'
import platform, torch, triton, transformers
print(f"python {platform.python_version()} torch {torch.__version__} (CUDA {torch.version.cuda}) "
      f"triton {triton.__version__} transformers {transformers.__version__}")
PY
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

# 1. build: CUDA for the visible GPU only, to keep the compile short
arch=$(python -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
if TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS=16 pip install --no-build-isolation --no-deps -e . > "$out/build.log" 2>&1; then
  stage build "ok (sm_${arch/./})"
else
  stage build "FAILED (see build.log)"; tail -30 "$out/build.log"; exit 1
fi
python -c "import fastadapter; [print(f'{n:7s} {i.available} {i.reason}') for n, i in fastadapter.backends().items()]" \
  | tee "$out/backends.txt"

# 2. tests (GPU cases included); TRITON_INTERPRET stays unset so triton runs compiled
timeout 120 python -m pytest tests -q -p no:cacheprovider --junitxml="$out/tests.xml" > "$out/tests.log" 2>&1
stage tests "$(tail -1 "$out/tests.log")"

# 3. GPU benchmark suites (CUDA-event medians in extra_info)
timeout 150 python -m pytest benchmarks/ --benchmark-only -q -p no:cacheprovider -k "cuda" \
  --benchmark-json="$out/benchmarks.json" > "$out/benchmarks.log" 2>&1
stage "benchmark suites" "$(tail -1 "$out/benchmarks.log")"

# 4. the paper's comparison
timeout 140 python -m fastadapter.cli bench --preset gpu --out "$out" > "$out/bench.md" 2> "$out/bench.err"
stage "fastadapter bench" "$([ -s "$out/bench.json" ] && echo ok || echo 'FAILED (see bench.err)')"

{ [ -s "$out/benchmarks.json" ] && python benchmarks/summarize.py "$out/benchmarks.json"; echo; cat "$out/bench.md"; } \
  > "$out/summary.md" 2>&1
echo; cat "$out/summary.md"; echo; cat "$out/summary.txt"
