"""The Triton kernels compiled for the GPUs they target, on a machine without one.

The other tests run them through the interpreter (TRITON_INTERPRET=1, set by conftest.py when there is no
GPU), which accepts code the compiler rejects and knows no shared-memory or register limit. Here each kernel
goes through Triton's whole NVIDIA pipeline to a cubin, with the block sizes and warps the launchers pick, for
every dtype and bottleneck class: its shared memory must fit the device and ptxas must not spill registers.
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
DTYPES = ("fp32", "bf16", "fp16")
# From r = 1 (BLOCK_R 1, 64 rows per block) to 3072 (BLOCK_R 4096, one row per block).
BOTTLENECKS = (1, 37, 256, 300, 1024, 3072)


def _cases():
    """(capability, dtype, r, activation id, layernorm, has_bias): on sm_90 every dtype with every bottleneck,
    activation, norm and bias taking turns so that each of their values occurs; on sm_80 every dtype at
    r = 256 and at the largest blocks."""
    sm90 = [(90, dtype, r, i % 4, i % 2 == 0, i % 3 != 0)
            for i, (dtype, r) in enumerate(itertools.product(DTYPES, BOTTLENECKS))]
    sm80 = [(80, dtype, r, 0, True, True) for dtype in DTYPES for r in (256, 3072)]
    return sm90 + sm80


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
    return {"shared": compiled.metadata.shared, "registers": registers, "spill_bytes": spills}


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
        "finish_sums": (k._finish_sums_kernel, dict(PARTIAL="fp32", GRAD_W=dtype, GRAD_B=dtype, GRAD_H_SUM=dtype),
                        dict(programs="i32", r="i32"), dict(BLOCK=k.finish_block(r)), {}),
    }
    results = {}
    for name, (kernel, pointers, scalars, constexprs, extra) in launches.items():
        try:
            results[name] = _compile(kernel, capability, pointers, scalars, constexprs, **extra)
        except Exception as error:  # reported per kernel by the test below
            results[name] = f"{type(error).__name__}: {str(error)[-2000:]}"
    return results


@pytest.fixture(scope="module")
def compiled():
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    child = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, timeout=1200)
    assert child.returncode == 0, f"the compiling child failed:\n{child.stderr[-4000:]}"
    return {tuple(line["case"]): line["kernels"] for line in map(json.loads, child.stdout.splitlines())}


@pytest.mark.parametrize("case", CASES, ids=lambda c: "sm{}-{}-r{}-act{}-{}-{}".format(
    c[0], c[1], c[2], c[3], "layernorm" if c[4] else "rmsnorm", "bias" if c[5] else "nobias"))
def test_kernels_compile_for_the_gpu(compiled, case):
    capability = case[0]
    for kernel, result in compiled[case].items():
        assert isinstance(result, dict), f"{kernel} does not compile for sm_{capability}: {result}"
        assert result["shared"] <= SHARED_LIMIT[capability], (
            f"{kernel} needs {result['shared']} bytes of shared memory; sm_{capability} has "
            f"{SHARED_LIMIT[capability]}")
        assert result["spill_bytes"] == 0, (
            f"{kernel} spills {result['spill_bytes']} bytes per thread on sm_{capability} "
            f"({result['registers']} registers): fewer elements per thread (kernels.row_blocks)")


if __name__ == "__main__":  # the child: one JSON line per case
    assert os.environ.get("TRITON_INTERPRET") != "1", "compile without the interpreter"
    for case in CASES:
        print(json.dumps({"case": case, "kernels": _compile_case(*case)}), flush=True)
