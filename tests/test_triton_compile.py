"""The Triton kernels compiled for the GPUs they target, on a machine without one.

The other tests run them through the interpreter (TRITON_INTERPRET=1, set by conftest.py when there is no
GPU), which accepts code the compiler rejects and knows no shared-memory or register limit. Here each kernel
goes through Triton's whole NVIDIA pipeline to a cubin, with the block sizes and warps the launchers pick, for
every dtype and bottleneck class: its shared memory must fit the device and no register spill may cost per row.
That is read from the machine code (cuobjdump): no local-memory load or store inside a loop, nor anywhere in the
forward, whose programs each take one block of rows. A spill outside the backward's loop over rows (ptxas parks a
value there that is live across the loop but unused in it: one store, one load per program) is allowed: ptxas
makes that trade at occupancy steps, differently by version: over every activation, norm, dtype and bottleneck
here on sm_90 (`python tests/test_triton_compile.py --all`), triton 3.6's ptxas spills in 12 of 144 backward
configurations, 3.8's in 6 and in one forward (benchmarks/results/notes/cpu-2026-11-29/triton-spills-*.md). Two of
those cost per row and are outside the cases sampled here (not BLIP's shapes): 3.6's backward at r = 1024 with
SiLU and LayerNorm in 16-bit types, 3.8's forward at r = 3072 with SiLU in float32.
The compiler needs the real @triton.jit functions, so the compiling runs in a child process without
TRITON_INTERPRET (this file run as a script). Values are checked on a GPU by tests/test_gpu.py.
"""

import itertools
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

triton = pytest.importorskip("triton")
if tuple(int(part) for part in triton.__version__.split(".")[:2]) < (3, 4):
    pytest.skip(f"the compile API used here (ASTSource by argument name, knobs, get_ptxas) is triton >= 3.4's; "
                f"this is triton {triton.__version__}", allow_module_level=True)

# Shared memory a block may use (the opt-in maximum): sm_80 (A100) 163 KiB, sm_90 (H100/H200) 227 KiB.
SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
# Kernels without a loop over rows: each program takes one block of rows, so any spill in them costs per row.
LOOP_FREE = ("forward",)
DTYPES = ("fp32", "bf16", "fp16")
# From r = 1 (BLOCK_R 1, 64 rows per block) to 3072 (BLOCK_R 4096, one row per block).
BOTTLENECKS = (1, 37, 256, 300, 1024, 3072)


def _cases():
    """(capability, dtype, r, activation id, layernorm, has_bias): on sm_90 every dtype with every bottleneck,
    activation, norm and bias taking turns so that each of their values occurs, and BLIP's own adapter (r = 256,
    exact GELU, LayerNorm, bias) in every dtype; on sm_80 every dtype at r = 256 and at the largest blocks."""
    sm90 = [(90, dtype, r, i % 4, i % 2 == 0, i % 3 != 0)
            for i, (dtype, r) in enumerate(itertools.product(DTYPES, BOTTLENECKS))]
    blip = [(90, dtype, 256, 0, True, True) for dtype in DTYPES]
    sm80 = [(80, dtype, r, 0, True, True) for dtype in DTYPES for r in (256, 3072)]
    return sm90 + [case for case in blip if case not in sm90] + sm80


CASES = _cases()


def _resources(ptx, capability):
    """(registers, spill bytes) per thread, from Triton's own ptxas run verbosely on the kernel's PTX."""
    from triton.backends.nvidia.compiler import get_ptxas

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        arch = f"sm_{capability}" + ("a" if capability >= 90 else "")
        out = subprocess.run([get_ptxas(capability).path, "-v", f"--gpu-name={arch}", path, "-o",
                              os.path.join(tmp, "kernel.cubin")], capture_output=True, text=True, check=True).stderr
    registers = int(re.search(r"Used (\d+) registers", out).group(1))
    spills = sum(int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", out))
    return registers, spills


SASS_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def _sass(cubin):
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([knobs.nvidia.cuobjdump.path, "-sass", f.name], capture_output=True, text=True,
                              check=True).stdout


def _local_memory(sass):
    """The SASS's local-memory instructions (spill stores and loads): (all, those inside a loop), as
    "address: instruction". A loop is the span from a backward branch's target to the branch."""
    code = [(int(address, 16), text) for address, text in SASS_INSTRUCTION.findall(sass)]
    loops = [(int(m.group(1), 16), address) for address, text in code
             if (m := re.search(r"\bBRA\b.*?0x([0-9a-f]+)", text)) and int(m.group(1), 16) <= address]
    local = [(address, text) for address, text in code if re.search(r"\b(?:LDL|STL)\b", text)]
    in_loops = [(address, text) for address, text in local if any(lo <= address <= hi for lo, hi in loops)]
    return [f"{a:#x}: {t}" for a, t in local], [f"{a:#x}: {t}" for a, t in in_loops]


def _compile(kernel, capability, pointers, scalars, constexprs, **options):
    """Compiles `kernel` to a cubin for sm_<capability>; pointers: argument -> element type, scalars:
    argument -> type, constexprs and options as the launcher passes them. Returns its shared memory (bytes),
    registers and spill bytes per thread."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = {**{name: f"*{t}" for name, t in pointers.items()}, **scalars,
                 **dict.fromkeys(constexprs, "constexpr")}
    if set(signature) != set(kernel.arg_names):
        raise AssertionError(f"the test's signature {sorted(signature)} is not the kernel's {kernel.arg_names}")
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", capability, 32), options=options)
    if not compiled.asm.get("cubin"):
        raise AssertionError("no cubin")
    registers, spills = _resources(compiled.asm["ptx"], capability)
    sass = _sass(compiled.asm["cubin"])
    local, local_in_loops = _local_memory(sass)
    # Tensor-core instructions by mnemonic: HGMMA (Hopper's warpgroup MMA, wgmma) and HMMA (mma.sync).
    tensor_cores = sorted(set(re.findall(r"\b(HGMMA|HMMA)\b", sass)))
    return {"shared": compiled.metadata.shared, "registers": registers, "spill_bytes": spills,
            "local_memory": local, "local_memory_in_loops": local_in_loops, "tensor_cores": tensor_cores}


def _compile_case(capability, dtype, r, act, layernorm, has_bias):
    """Each kernel of the case compiled; returns {kernel: its resources (_compile) or the error}."""
    from fastadapter.kernels import adapter as k

    block_m, block_r, num_warps = k.row_blocks(r)
    options = dict(HAS_BIAS=has_bias, ACT=act, LAYERNORM=layernorm, BLOCK_M=block_m, BLOCK_R=block_r)
    launches = {
        "forward": (k._forward_kernel, dict(H=dtype, W=dtype, B=dtype, A=dtype, MEAN="fp32", RSTD="fp32"),
                    dict(rows="i32", r="i32", eps="fp32"), options, dict(num_warps=num_warps)),
        "backward": (k._backward_kernel, dict(GA=dtype, H=dtype, MEAN="fp32", RSTD="fp32", W=dtype, B=dtype,
                                              A=dtype, GH=dtype, PARTIAL="fp32"),
                     dict(rows="i32", r="i32", rows_per_program="i32"), options,
                     dict(num_warps=num_warps, enable_fp_fusion=False)),
        "column_sums": column_sums_launch(dtype, has_up=False),
    }
    return compile_launches(capability, launches)


def column_sums_launch(dtype, has_up):
    """The launch of kernels/column_sums.py's kernel, for compile_launches."""
    from fastadapter.kernels import column_sums as c

    return (c._column_sums_kernel, dict(P="fp32", GRAD_W=dtype, GRAD_B=dtype, GRAD_H_SUM=dtype, GRAD_U=dtype),
            dict(rows="i32", columns="i32", r="i32"), dict(HAS_U=has_up, BLOCK_C=c.BLOCK_C, CHUNK=c.CHUNK),
            dict(num_warps=c.NUM_WARPS))


def compile_launches(capability, launches):
    """{kernel: its resources (_compile), or the error as text}, for launches {kernel: (fn, pointers, scalars,
    constexprs, options)}."""
    results = {}
    for name, (kernel, pointers, scalars, constexprs, extra) in launches.items():
        try:
            results[name] = _compile(kernel, capability, pointers, scalars, constexprs, **extra)
        except Exception as error:  # reported per kernel by the test below
            results[name] = f"{type(error).__name__}: {str(error)[-2000:]}"
    return results


def compile_in_child(script):
    """Runs `script` (a test file run as a script prints one JSON line per case) without TRITON_INTERPRET and
    returns {case: its kernels' results}."""
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    child = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=1200,
                           cwd=os.path.dirname(os.path.abspath(script)))
    assert child.returncode == 0, f"the compiling child failed:\n{child.stderr[-4000:]}"
    return {tuple(line["case"]): line["kernels"] for line in map(json.loads, child.stdout.splitlines())}


@pytest.fixture(scope="module")
def compiled():
    return compile_in_child(__file__)


def assert_compiles_and_fits(kernel, result, capability):
    assert isinstance(result, dict), f"{kernel} does not compile for sm_{capability}: {result}"
    assert result["shared"] <= SHARED_LIMIT[capability], (
        f"{kernel} needs {result['shared']} bytes of shared memory; sm_{capability} has {SHARED_LIMIT[capability]}")


def assert_fits_without_loop_spills(results, capability):
    """Every kernel of a case compiles, fits shared memory and has no local-memory instruction inside a loop."""
    for kernel, result in results.items():
        assert_compiles_and_fits(kernel, result, capability)
        assert not result["local_memory_in_loops"], (
            f"{kernel} spills inside its loop on sm_{capability} ({result['registers']} registers, "
            f"{result['spill_bytes']} bytes of spills per thread): {result['local_memory_in_loops'][:3]}")


def print_compiled_cases(script, cases, compile_case):
    """The compiling child's main: one JSON line per case (read back by compile_in_child)."""
    assert os.environ.get("TRITON_INTERPRET") != "1", "compile without the interpreter"
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    for case in cases:
        print(json.dumps({"case": case, "kernels": compile_case(*case)}), flush=True)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "sm{}-{}-r{}-act{}-{}-{}".format(
    c[0], c[1], c[2], c[3], "layernorm" if c[4] else "rmsnorm", "bias" if c[5] else "nobias"))
def test_kernels_compile_for_the_gpu(compiled, case):
    capability = case[0]
    for kernel, result in compiled[case].items():
        assert_compiles_and_fits(kernel, result, capability)
        per_row = result["local_memory"] if kernel in LOOP_FREE else result["local_memory_in_loops"]
        assert not per_row, (
            f"{kernel} spills per row on sm_{capability} ({result['registers']} registers, "
            f"{result['spill_bytes']} bytes of spill stores and loads per thread): {len(per_row)} local-memory "
            f"instructions, e.g. {per_row[:3]}; "
            f"fewer elements per thread (kernels.row_blocks)")


def _spill_table():
    """Every activation and norm with every dtype and bottleneck on sm_90 (bias on), as a Markdown table: where
    ptxas spills and whether per row. The test samples these; this is the whole picture for one triton."""
    from fastadapter.kernels.adapter import ACTIVATION_IDS

    print(f"triton {triton.__version__}, sm_90, bias on; local-memory instructions outside / inside loops "
          f"(the forward has no loop)\n")
    print("| kernel | dtype | r | activation | norm | registers | spill bytes (stores + loads) | outside loops "
          "| inside loops |\n|---|---|---:|---:|---|---:|---:|---:|---:|")
    activations = {i: name for name, i in ACTIVATION_IDS.items()}
    for dtype, r, act, layernorm in itertools.product(DTYPES, BOTTLENECKS, activations, (True, False)):
        for kernel, result in _compile_case(90, dtype, r, act, layernorm, True).items():
            if kernel == "finish_sums" and (act or not layernorm):
                continue  # the same kernel whatever the activation and norm
            inside = len(result["local_memory_in_loops"])
            print(f"| {kernel} | {dtype} | {r} | {activations[act]} | {'layernorm' if layernorm else 'rmsnorm'} | "
                  f"{result['registers']} | {result['spill_bytes']} | {len(result['local_memory']) - inside} | "
                  f"{inside} |", flush=True)


if __name__ == "__main__":  # the child: one JSON line per case; --all: the table of every configuration
    assert os.environ.get("TRITON_INTERPRET") != "1", "compile without the interpreter"
    if sys.argv[1:] == ["--all"]:
        _spill_table()
        sys.exit(0)
    for case in CASES:
        print(json.dumps({"case": case, "kernels": _compile_case(*case)}), flush=True)
