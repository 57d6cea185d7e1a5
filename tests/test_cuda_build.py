"""The CUDA kernels as built into fastadapter._C, read back with cuobjdump: no GPU needed, so CI checks what
only a GPU run could otherwise show. Every kernel of every architecture in the build keeps to its registers
(no stack, no local memory: ptxas spills there); the values are checked on a GPU by tests/test_gpu.py."""

import os
import re
import shutil
import subprocess

import pytest

from fastadapter import _C

pytestmark = pytest.mark.skipif(not _C.built_with_cuda(), reason="the CUDA part is not built here")


def cuobjdump():
    """The CUDA toolkit's cuobjdump, or the one Triton ships."""
    found = shutil.which("cuobjdump") or os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin",
                                                      "cuobjdump")
    if os.path.exists(found):
        return found
    try:
        from triton import knobs

        return knobs.nvidia.cuobjdump.path
    except (ImportError, AttributeError):
        pytest.fail("no cuobjdump: neither the CUDA toolkit's (CUDA_HOME/bin) nor Triton's")


def resource_usage():
    """{(arch, kernel): {"REG": n, "STACK": n, "LOCAL": n, ...}} for every kernel in the built extension."""
    out = subprocess.run([cuobjdump(), "--dump-resource-usage", _C.__file__], capture_output=True, text=True,
                         check=True).stdout
    usage, arch, kernel = {}, None, None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("arch = "):
            arch = line.split("= ")[1]
        elif line.startswith("Function "):
            kernel = line[len("Function "):].rstrip(":")
        elif line.startswith("REG:") and kernel is not None:
            usage[arch, kernel] = {key: int(value) for key, value in re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line)}
            kernel = None
    return usage


def test_cuda_kernels_do_not_spill():
    usage = resource_usage()
    kernels = {kernel for _, kernel in usage}
    # The forward and backward kernels of each kind, each specialised per dtype, activation and norm.
    assert any("forward_kernel" in k for k in kernels) and any("backward_vec_kernel" in k for k in kernels), \
        f"the extension's device code lacks the adapter kernels: {sorted(kernels)[:5]}"
    spilling = [f"{arch} {kernel}: {u['REG']} registers, stack {u['STACK']} B, local {u['LOCAL']} B"
                for (arch, kernel), u in usage.items() if u["STACK"] or u["LOCAL"]]
    assert not spilling, f"{len(spilling)} of {len(usage)} kernels spill:\n" + "\n".join(spilling[:10])


if __name__ == "__main__":  # a table of registers per kernel kind and architecture (benchmarks/results/)
    import collections

    kinds = {"forward_vec_kernel": "forward, row-in-registers (opt-in)", "forward_kernel": "forward, general",
             "backward_vec_kernel": "backward, row-in-registers (opt-in)", "backward_kernel": "backward, general",
             "finish_sums_kernel": "backward, finishing sums"}
    groups = collections.defaultdict(list)
    for (arch, kernel), u in resource_usage().items():
        groups[arch, next((label for key, label in kinds.items() if key in kernel), kernel)].append(u)
    print("| arch | kernel | instances | registers (min–max) | stack + local bytes (max) |\n|---|---|---:|---:|---:|")
    for (arch, kind), us in sorted(groups.items()):
        regs = [u["REG"] for u in us]
        spills = max(u["STACK"] + u["LOCAL"] for u in us)
        print(f"| {arch} | {kind} | {len(us)} | {min(regs)}–{max(regs)} | {spills} |")
