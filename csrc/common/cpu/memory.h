// Memory for the CPU kernels (memory.cpp): fresh multi-megabyte memory faults once per 4 KiB page on first
// touch, which costs more than some kernels' own work, so their large tensors come from a caching allocator of
// huge-page blocks (the effect of turning it off: benchmarks/results/).
#pragma once

#include <ATen/ATen.h>

namespace fastadapter {

// An empty contiguous CPU tensor; from 2 MiB up, from the caching allocator.
at::Tensor empty_cpu_large(at::IntArrayRef sizes, at::ScalarType dtype);
// Frees the allocator's cached (unused) blocks; returns the bytes released.
int64_t release_cpu_cache();

}  // namespace fastadapter
