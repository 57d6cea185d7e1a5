// One table of implementations per op: its backends (cpu, cuda: C++ registered at load; triton, torch: Python
// registered at import) each supply the op's whole forward and backward under the op's one saved-for-backward
// contract. The op's dispatcher kernel looks the call's backend up here: a handful of string compares a call.
#pragma once

#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <deque>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <utility>

namespace fastadapter {

template <typename Impl>
class BackendTable {
 public:
  explicit BackendTable(std::string op) : op_(std::move(op)) {}

  // Adds or replaces the implementation named `name`.
  void add(const std::string& name, Impl impl) {
    std::unique_lock lock(mutex_);
    for (auto& entry : entries_) {
      if (entry.first == name) {
        entry.second = std::move(impl);
        return;
      }
    }
    entries_.emplace_back(name, std::move(impl));  // a deque: references handed out stay valid
  }

  const Impl& get(c10::string_view name) const {
    std::shared_lock lock(mutex_);
    for (const auto& entry : entries_) {
      if (entry.first == name) return entry.second;
    }
    TORCH_CHECK_VALUE(false, "fastadapter.", op_, ": no backend '", std::string(name), "' implements the op's "
                      "saved-for-backward contract here (registered: ", names(), "); 'eager' is the plain PyTorch "
                      "function with autograd and is called from Python, not through the op");
  }

 private:
  std::string names() const {
    std::string out;
    for (const auto& entry : entries_) out += (out.empty() ? "" : ", ") + entry.first;
    return out.empty() ? "none" : out;
  }

  std::string op_;
  std::deque<std::pair<std::string, Impl>> entries_;
  mutable std::shared_mutex mutex_;
};

}  // namespace fastadapter
