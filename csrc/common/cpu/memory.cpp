// The CPU kernels' large tensors (see memory.h): a small caching allocator of huge-page blocks.
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <c10/core/Allocator.h>

#include <cstdlib>
#include <map>
#include <pthread.h>
#include <mutex>
#include <string>
#include <sys/mman.h>
#include <unordered_map>

#include "memory.h"

namespace fastadapter {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

size_t cache_limit_from_env() {
  constexpr size_t kDefault = size_t{512} << 20;
  const char* mb = std::getenv("FASTADAPTER_CPU_CACHE_MB");
  if (mb == nullptr || *mb == '\0') return kDefault;
  try {
    size_t parsed = 0;
    const long long value = std::stoll(mb, &parsed);
    if (parsed == std::string(mb).size() && value >= 0 && value < (1LL << 40)) {
      return static_cast<size_t>(value) << 20;
    }
  } catch (const std::exception&) {
  }
  TORCH_WARN("fastadapter: FASTADAPTER_CPU_CACHE_MB='", mb,
             "' is not a non-negative whole number of MiB; using the default 512");
  return kDefault;
}

// Blocks are 2 MiB-aligned and advised for transparent huge pages (as torch's own CPU allocator does under
// THP_MEM_ALLOC_ENABLE=1), so that first touch faults once per 2 MiB instead of once per 4 KiB; freed
// blocks are kept, up to the limit, and handed out again, so that a training loop's outputs and
// temporaries stop faulting at all after the first step.
class BlockCache {
 public:
  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // The smallest cached block that fits, if it wastes at most half of itself (shapes that vary from
      // step to step, such as caption lengths, still reuse blocks).
      auto it = free_.lower_bound(bytes);
      if (it != free_.end() && it->first <= 2 * bytes) {
        void* p = it->second;
        cached_ -= it->first;
        free_.erase(it);
        return p;
      }
    }
    void* p = nullptr;
    if (posix_memalign(&p, kHugePage, bytes) != 0) p = nullptr;
    if (p == nullptr) {
      release();  // cached blocks are the first thing to give back
      if (posix_memalign(&p, kHugePage, bytes) != 0) p = nullptr;
    }
    TORCH_CHECK(p != nullptr, "fastadapter: out of memory allocating ", bytes, " bytes on the CPU");
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
    std::lock_guard<std::mutex> lock(mutex_);
    sizes_[p] = bytes;
    return p;
  }

  void give_back(void* p) {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t bytes = sizes_.at(p);
    if (cached_ + bytes <= limit_) {
      free_.emplace(bytes, p);
      cached_ += bytes;
    } else {
      sizes_.erase(p);
      std::free(p);
    }
  }

  // fork() while another thread holds the lock would leave it locked forever in the child: hold it across
  // the fork (prepare) and let both sides go on (parent, child). The child's thread is the forking one.
  void lock_for_fork() { mutex_.lock(); }
  void unlock_after_fork() { mutex_.unlock(); }

  int64_t release() {
    std::lock_guard<std::mutex> lock(mutex_);
    const size_t released = cached_;
    for (const auto& [bytes, p] : free_) {
      sizes_.erase(p);
      std::free(p);
    }
    free_.clear();
    cached_ = 0;
    return static_cast<int64_t>(released);
  }

 private:
  std::mutex mutex_;
  std::unordered_map<void*, size_t> sizes_;  // every live or cached block
  std::multimap<size_t, void*> free_;        // cached blocks by size
  size_t cached_ = 0;
  const size_t limit_ = cache_limit_from_env();
};

BlockCache* new_block_cache();

// Never destroyed: tensors may be freed during interpreter shutdown, after static destructors ran.
BlockCache& block_cache() {
  static BlockCache* cache = new_block_cache();
  return *cache;
}

BlockCache* new_block_cache() {
  pthread_atfork([] { block_cache().lock_for_fork(); }, [] { block_cache().unlock_after_fork(); },
                 [] { block_cache().unlock_after_fork(); });
  return new BlockCache();
}

void give_back_block(void* p) { block_cache().give_back(p); }

struct CachingHugePageAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    if (n == 0) return {nullptr, nullptr, &give_back_block, c10::Device(c10::kCPU)};
    void* p = block_cache().take((n + kHugePage - 1) / kHugePage * kHugePage);
    return {p, p, &give_back_block, c10::Device(c10::kCPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &give_back_block; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CachingHugePageAllocator allocator;

}  // namespace

at::Tensor empty_cpu_large(at::IntArrayRef sizes, at::ScalarType dtype) {
  const int64_t bytes = c10::multiply_integers(sizes) * static_cast<int64_t>(c10::elementSize(dtype));
  if (bytes < static_cast<int64_t>(kHugePage)) return at::empty(sizes, at::TensorOptions().dtype(dtype));
  return at::detail::empty_generic(sizes, &allocator, c10::DispatchKeySet(c10::DispatchKey::CPU), dtype,
                                   std::nullopt);
}

int64_t release_cpu_cache() { return block_cache().release(); }

}  // namespace fastadapter
