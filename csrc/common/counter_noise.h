// Counter-based random numbers for the samplers' kernels (CPU and CUDA): a uniform in (0, 1) that is a pure
// function of (seed, stream, row, column), so a draw does not depend on which thread or block computes it. The
// mixer is splitmix64's finaliser, applied to the row key and then to each column.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTADAPTER_HOST_DEVICE __host__ __device__
#else
#define FASTADAPTER_HOST_DEVICE
#endif

namespace fastadapter {

FASTADAPTER_HOST_DEVICE inline uint64_t mix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// The key of one row of one stream (stream: which draw, e.g. the direction of a sampler).
FASTADAPTER_HOST_DEVICE inline uint64_t row_key(uint64_t seed, uint64_t stream, int64_t row) {
  return mix64(mix64(seed ^ (stream * 0xD1B54A32D192ED03ull)) + static_cast<uint64_t>(row));
}

// A uniform in (0, 1) (never 0 or 1: 24 bits and a half) for column `col` of the row with key `key`.
FASTADAPTER_HOST_DEVICE inline float counter_uniform(uint64_t key, int64_t col) {
  const uint64_t h = mix64(key + static_cast<uint64_t>(col) * 0x9E3779B97F4A7C15ull);
  return (static_cast<float>(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
}

}  // namespace fastadapter
