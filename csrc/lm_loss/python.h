// The LM loss op's Python bindings (python.cpp), added to fastadapter._C by csrc/extension.cpp.
#pragma once

#include <torch/extension.h>

namespace fastadapter {
void bind_lm_loss(pybind11::module_& m);
}
