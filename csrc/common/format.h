// How the ops' error messages name dtypes and shapes: as Python prints them, so a message reads like the call.
#pragma once

#include <ATen/ATen.h>

#include <sstream>
#include <string>

namespace fastadapter {

inline std::string dtype_name(at::ScalarType type) {
  return "torch." + std::string(c10::getDtypeNames(type).first);
}

inline std::string shape_str(c10::SymIntArrayRef sizes) {  // as Python prints a tuple
  std::ostringstream out;
  out << "(";
  for (size_t i = 0; i < sizes.size(); ++i) out << (i ? ", " : "") << sizes[i];
  out << (sizes.size() == 1 ? ",)" : ")");
  return out.str();
}

}  // namespace fastadapter
