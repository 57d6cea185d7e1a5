// fastadapter._C: the torch.ops.fastadapter namespace and the Python module. Each op keeps its schema, checks,
// autograd and kernels in its own folder (csrc/<op>/) and adds its bindings here; shared pieces live in
// csrc/common/.
#include <torch/extension.h>

#include "adapter/python.h"
#include "contrastive/python.h"
#include "itm/python.h"
#include "lm_loss/python.h"
#include "common/cpu/memory.h"

// The namespace every op's schemas join (TORCH_LIBRARY_FRAGMENT in csrc/<op>/schema.cpp).
TORCH_LIBRARY(fastadapter, m) {}

namespace {

bool built_with_cuda() {
#ifdef FASTADAPTER_WITH_CUDA
  return true;
#else
  return false;
#endif
}

const char* cpu_isa() {
#if defined(FASTADAPTER_ISA_AVX512)
  return "avx512";
#elif defined(FASTADAPTER_ISA_AVX2)
  return "avx2";
#else
  return "default";
#endif
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastadapter native kernels (ops are registered under torch.ops.fastadapter)";
  m.def("built_with_cuda", &built_with_cuda, "whether the CUDA kernels were compiled into this build");
  m.def("cpu_isa", &cpu_isa, "the CPU instruction set the CPU kernels were compiled for");
  m.def("release_cpu_cache", &fastadapter::release_cpu_cache,
        "frees the CPU blocks cached for reuse by the ops' CPU kernels; returns the bytes freed");
  fastadapter::bind_adapter(m);
  fastadapter::bind_contrastive(m);
  fastadapter::bind_itm(m);
  fastadapter::bind_lm_loss(m);
}
