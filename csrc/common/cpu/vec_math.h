// Shared by the CPU kernels: float32 vector math over at::vec (the activations and their derivatives, fast
// transcendentals, masked loads and stores past a row's end). Compiled for the ISA the build chose.
#pragma once

#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../activation.h"

namespace fastadapter::cpu {
// Internal linkage, as when these lived in the kernel file: each including kernel file gets its own copies.
namespace {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kLanes = Vec::size();

// Transcendentals use ATen's polynomial exp_u20 (error <= 20 ulp, about 2e-6 relative): Sleef's calls cost
// several times more here and the kernels are meant to be near memory speed.
inline Vec fast_exp(Vec x) { return x.exp_u20(); }

// erf(|u|) by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), given exp(-u^2), which callers reuse.
inline Vec erf_abs(Vec abs_u, Vec exp_neg_u2) {
  const Vec t = Vec(1.f) / (Vec(0.3275911f) * abs_u + Vec(1.f));
  const Vec poly =
      ((((Vec(1.061405429f) * t - Vec(1.453152027f)) * t + Vec(1.421413741f)) * t - Vec(0.284496736f)) * t +
       Vec(0.254829592f)) * t;
  return Vec(1.f) - poly * exp_neg_u2;
}

inline Vec tanh_from_exp(Vec x) { return Vec(1.f) - Vec(2.f) / (fast_exp(Vec(2.f) * x) + Vec(1.f)); }

template <Activation A>
struct Act;

template <>
struct Act<Activation::Gelu> {
  // value = z * Phi(z), grad = Phi(z) + z * phi(z); one exp serves both.
  static void cdf_pdf(Vec z, Vec& cdf, Vec& pdf) {
    const Vec e = fast_exp(Vec(-0.5f) * z * z);
    const Vec erf_mag = erf_abs(z.abs() * Vec(kSqrtHalf), e);
    cdf = Vec(0.5f) * (Vec(1.f) + Vec::blendv(erf_mag, erf_mag.neg(), z < Vec(0.f)));
    pdf = e * Vec(kInvSqrt2Pi);
  }
  static Vec value(Vec z) {
    Vec cdf, pdf;
    cdf_pdf(z, cdf, pdf);
    return z * cdf;
  }
  static void value_and_grad(Vec z, Vec& value, Vec& grad) {
    Vec cdf, pdf;
    cdf_pdf(z, cdf, pdf);
    value = z * cdf;
    grad = cdf + z * pdf;
  }
};

template <>
struct Act<Activation::GeluTanh> {
  static Vec value(Vec z) {
    return Vec(0.5f) * z * (Vec(1.f) + tanh_from_exp(Vec(kSqrt2OverPi) * (z + Vec(kGeluTanhCubic) * z * z * z)));
  }
  static void value_and_grad(Vec z, Vec& value, Vec& grad) {
    const Vec t = tanh_from_exp(Vec(kSqrt2OverPi) * (z + Vec(kGeluTanhCubic) * z * z * z));
    const Vec dinner = Vec(kSqrt2OverPi) * (Vec(1.f) + Vec(3.f * kGeluTanhCubic) * z * z);
    value = Vec(0.5f) * z * (Vec(1.f) + t);
    grad = Vec(0.5f) * (Vec(1.f) + t) + Vec(0.5f) * z * (Vec(1.f) - t * t) * dinner;
  }
};

template <>
struct Act<Activation::Relu> {
  static Vec value(Vec z) { return at::vec::maximum(z, Vec(0.f)); }
  static void value_and_grad(Vec z, Vec& value, Vec& grad) {
    value = at::vec::maximum(z, Vec(0.f));
    grad = Vec::blendv(Vec(0.f), Vec(1.f), z > Vec(0.f));
  }
};

template <>
struct Act<Activation::Silu> {
  static Vec value(Vec z) { return z / (Vec(1.f) + fast_exp(z.neg())); }
  static void value_and_grad(Vec z, Vec& value, Vec& grad) {
    const Vec s = Vec(1.f) / (Vec(1.f) + fast_exp(z.neg()));
    value = z * s;
    grad = s * (Vec(1.f) + z * (Vec(1.f) - s));
  }
};

inline float horizontal_sum(Vec v) {
  float lanes[kLanes];
  v.store(lanes);
  float sum = 0.f;
  for (int64_t i = 0; i < kLanes; ++i) sum += lanes[i];
  return sum;
}

// Loads are zero-padded past the row end, so sums over a partial last vector stay correct.
inline Vec load(const float* p, int64_t j, int64_t r) { return Vec::loadu(p + j, std::min(kLanes, r - j)); }
inline Vec load_or_zero(const float* p, int64_t j, int64_t r) { return p ? load(p, j, r) : Vec(0.f); }
inline void store(Vec v, float* p, int64_t j, int64_t r) { v.store(p + j, std::min(kLanes, r - j)); }

}  // namespace
}  // namespace fastadapter::cpu
