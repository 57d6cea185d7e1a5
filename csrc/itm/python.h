// The ITM ops' Python bindings (python.cpp), added to fastadapter._C by csrc/extension.cpp.
#pragma once

#include <torch/extension.h>

namespace fastadapter {
void bind_itm(pybind11::module_& m);
}
