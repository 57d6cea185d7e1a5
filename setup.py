"""Builds fastadapter._C: the C++ CPU kernels always, the CUDA kernels when torch is a CUDA build and
nvcc is found (no GPU needed). FASTADAPTER_BUILD_CUDA=0|1 overrides that choice; FASTADAPTER_CPU_ISA
(avx512 | avx2 | default) overrides the CPU instruction set, which defaults to the best one of the
building machine (the runtime checks it before running a kernel)."""

import glob
import os

import torch
from setuptools import setup

# torch takes CUDA_HOME from the nvcc on PATH; when that is a wrapper script (as on our machines) the
# toolkit's libraries are not beside it. Prefer the conventional toolkit root when nothing is set.
if not (os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")) and os.path.exists("/usr/local/cuda/bin/nvcc"):
    os.environ["CUDA_HOME"] = "/usr/local/cuda"

from torch.utils import cpp_extension  # noqa: E402  (reads CUDA_HOME at import)

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "7.5;8.0;9.0+PTX"  # T4, Ampere (SASS runs on all 8.x), Hopper; PTX for newer GPUs

ISA_FLAGS = {
    "avx512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c",
               "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512", "-DFASTADAPTER_ISA_AVX512"],
    "avx2": ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2",
             "-DFASTADAPTER_ISA_AVX2"],
    "default": ["-DCPU_CAPABILITY=DEFAULT"],
}


def host_cpu_isa() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(f.read().split())
    except OSError:
        return "default"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma", "f16c"} <= flags:
        return "avx2"
    return "default"


def cpu_isa() -> str:
    isa = os.environ.get("FASTADAPTER_CPU_ISA", "").lower() or host_cpu_isa()
    if isa not in ISA_FLAGS:
        raise SystemExit(f"FASTADAPTER_CPU_ISA={isa!r}: expected one of {sorted(ISA_FLAGS)}")
    return isa


def build_cuda() -> bool:
    forced = os.environ.get("FASTADAPTER_BUILD_CUDA")
    if forced is not None:
        if forced not in ("0", "1"):
            raise SystemExit(f"FASTADAPTER_BUILD_CUDA={forced!r}: expected 0 or 1")
        if forced == "1" and (torch.version.cuda is None or cpp_extension.CUDA_HOME is None):
            raise SystemExit("FASTADAPTER_BUILD_CUDA=1 but torch is not a CUDA build or nvcc was not found")
        return forced == "1"
    return torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None


def cuda_include_dirs() -> list:
    # The system toolkit may lack cuBLAS/cuSPARSE headers that torch's CUDA headers include; the CUDA
    # build of torch ships them in the nvidia wheels beside it.
    site = os.path.dirname(os.path.dirname(torch.__file__))
    return sorted(d for d in glob.glob(os.path.join(site, "nvidia", "*", "include")) if os.path.isdir(d))


def extension():
    isa = cpu_isa()
    # Every op's C++ under csrc/ (its folder, csrc/<op>/) and csrc/common/; what sits in a cuda/ folder only
    # with the CUDA part.
    every = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    sources = [s for s in every if "/cuda/" not in s]
    cuda_sources = [s for s in every if "/cuda/" in s] + sorted(glob.glob("csrc/**/cuda/*.cu", recursive=True))
    # -fopenmp makes at::parallel_for (inlined from ATen's headers) run in parallel; the OpenMP runtime is
    # the one libtorch_cpu already loads.
    cxx = ["-O3", "-fopenmp", *ISA_FLAGS[isa]]
    if not build_cuda():
        print(f"fastadapter: building C++ CPU kernels ({isa}); CUDA kernels not built")
        return cpp_extension.CppExtension("fastadapter._C", sources, extra_compile_args={"cxx": cxx})
    if not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCHS
    print(f"fastadapter: building C++ CPU kernels ({isa}) and CUDA kernels for "
          f"{os.environ.get('TORCH_CUDA_ARCH_LIST', 'the visible GPUs')}")
    return cpp_extension.CUDAExtension(
        "fastadapter._C",
        sources + cuda_sources,
        include_dirs=cuda_include_dirs(),
        define_macros=[("FASTADAPTER_WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx + ["-DFASTADAPTER_WITH_CUDA"],
                            "nvcc": ["-O3", "-DFASTADAPTER_WITH_CUDA"]},
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)},
)
