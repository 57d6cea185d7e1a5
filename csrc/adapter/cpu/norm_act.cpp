// CPU kernels of the adapter's fused middle: norm + activation in one vectorised pass per row,
// parallel over rows. Math is float32 whatever the storage dtype; statistics are float32.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../../common/cpu/vec_math.h"
#include "../adapter.h"

namespace fastadapter {
namespace {

using namespace fastadapter::cpu;

template <Norm N>
void row_statistics(const float* h, int64_t r, float eps, float& mean, float& rstd) {
  if constexpr (N == Norm::LayerNorm) {
    Vec sum(0.f);
    for (int64_t j = 0; j < r; j += kLanes) sum += load(h, j, r);
    mean = horizontal_sum(sum) / r;
    Vec sq(0.f);
    for (int64_t j = 0; j < r; j += kLanes) {
      const int64_t n = std::min(kLanes, r - j);
      const Vec d = Vec::set(Vec(0.f), Vec::loadu(h + j, n) - Vec(mean), n);
      sq += d * d;
    }
    rstd = 1.f / std::sqrt(horizontal_sum(sq) / r + eps);
  } else {
    Vec sq(0.f);
    for (int64_t j = 0; j < r; j += kLanes) {
      const Vec v = load(h, j, r);
      sq += v * v;
    }
    mean = 0.f;
    rstd = 1.f / std::sqrt(horizontal_sum(sq) / r + eps);
  }
}

template <Activation A, Norm N>
void forward_row(const float* h, const float* w, const float* b, int64_t r, float eps, float* a, float& mean,
                 float& rstd) {
  row_statistics<N>(h, r, eps, mean, rstd);
  const Vec vmean(mean), vrstd(rstd);
  for (int64_t j = 0; j < r; j += kLanes) {
    const Vec z = (load(h, j, r) - vmean) * vrstd * load(w, j, r) + load_or_zero(b, j, r);
    store(Act<A>::value(z), a, j, r);
  }
}

// One row of the backward: recomputes a, returns grad_h and adds this row's share of the
// norm-parameter grads and of sum(grad_h) into acc (3 x r). scratch holds r floats.
template <Activation A, Norm N>
void backward_row(const float* grad_a, const float* h, float mean, float rstd, const float* w, const float* b,
                  int64_t r, float* a, float* grad_h, float* acc, float* scratch) {
  float* acc_w = acc;
  float* acc_b = acc + r;
  float* acc_h = acc + 2 * r;
  const Vec vmean(mean), vrstd(rstd);
  Vec sum_g(0.f), sum_gx(0.f);
  for (int64_t j = 0; j < r; j += kLanes) {
    const Vec xhat = (load(h, j, r) - vmean) * vrstd;
    const Vec vw = load(w, j, r);
    Vec value, slope;
    Act<A>::value_and_grad(xhat * vw + load_or_zero(b, j, r), value, slope);
    store(value, a, j, r);
    const Vec gz = load(grad_a, j, r) * slope;  // zero past the row end
    store(load(acc_w, j, r) + gz * xhat, acc_w, j, r);
    store(load(acc_b, j, r) + gz, acc_b, j, r);
    const Vec gxhat = gz * vw;
    store(gxhat, scratch, j, r);
    sum_g += gxhat;
    sum_gx += gxhat * xhat;
  }
  const Vec mean_g(N == Norm::LayerNorm ? horizontal_sum(sum_g) / r : 0.f);
  const Vec mean_gx(horizontal_sum(sum_gx) / r);
  for (int64_t j = 0; j < r; j += kLanes) {
    const Vec xhat = (load(h, j, r) - vmean) * vrstd;
    const Vec gh = vrstd * (load(scratch, j, r) - mean_g - xhat * mean_gx);
    store(gh, grad_h, j, r);
    store(load(acc_h, j, r) + gh, acc_h, j, r);
  }
}

// Rows are split into at most one chunk per thread; each chunk owns a slice of the partial sums,
// so parameter grads are deterministic for a given thread count.
int64_t chunk_count(int64_t rows, int64_t r) {
  const int64_t min_rows = std::max<int64_t>(1, 16384 / std::max<int64_t>(r, 1));
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (rows + min_rows - 1) / min_rows));
}

template <typename T>
const float* row_as_float(const T* row, float* buffer, int64_t r) {
  if constexpr (std::is_same_v<T, float>) {
    return row;
  } else {
    at::vec::convert(row, buffer, r);
    return buffer;
  }
}

template <typename T>
float* output_row(T* row, float* buffer) {
  if constexpr (std::is_same_v<T, float>) {
    return row;
  } else {
    return buffer;
  }
}

template <typename T>
void finish_row(const float* computed, T* row, int64_t r) {
  if constexpr (!std::is_same_v<T, float>) at::vec::convert(computed, row, r);
}

// The residual's rows, walked inside the norm pass's row loop (see ResidualRows in ../adapter.h):
// dest[i] = source[i] (+ bias), and, when column_sums is given ((chunks, width) float32), source summed
// into the row's chunk. NoResidual is the plain norm pass.
struct NoResidual {
  static constexpr int64_t scratch_floats = 0;
  void row(int64_t, int64_t, float*) const {}
};

template <typename T>
struct ResidualRowCopy {
  const T* source;
  T* dest;
  at::Tensor float_bias;  // undefined without bias
  const float* bias;
  float* column_sums;  // nullable
  int64_t width;
  int64_t scratch_floats;

  ResidualRowCopy(const ResidualRows& rows, float* column_sums)
      : source(rows.source.const_data_ptr<T>()),
        dest(rows.dest.mutable_data_ptr<T>()),
        float_bias(rows.bias.defined() ? rows.bias.to(at::kFloat).contiguous() : at::Tensor()),
        bias(float_bias.defined() ? float_bias.const_data_ptr<float>() : nullptr),
        column_sums(column_sums),
        width(rows.source.size(1)),
        scratch_floats(std::is_same_v<T, float> ? 0 : width) {}

  void row(int64_t i, int64_t chunk, float* scratch) const {
    const T* src = source + i * width;
    T* dst = dest + i * width;
    float* sums = column_sums ? column_sums + chunk * width : nullptr;
    const float* in = row_as_float(src, scratch, width);
    float* out = output_row(dst, scratch);
    for (int64_t j = 0; j < width; j += kLanes) {
      const Vec v = load(in, j, width);
      if (sums) store(load(sums, j, width) + v, sums, j, width);
      store(bias ? v + load(bias, j, width) : v, out, j, width);
    }
    finish_row(out, dst, width);
  }
};

template <typename T, Activation A, Norm N, typename Residual>
void forward_kernel(const at::Tensor& h, const float* w, const float* b, float eps, at::Tensor& a, at::Tensor& mean,
                    at::Tensor& rstd, const Residual& residual) {
  const int64_t rows = h.size(0), r = h.size(1);
  const T* hp = h.const_data_ptr<T>();
  T* ap = a.mutable_data_ptr<T>();
  float* mp = mean.mutable_data_ptr<float>();
  float* rp = rstd.mutable_data_ptr<float>();
  at::parallel_for(0, rows, std::max<int64_t>(1, 4096 / r), [&](int64_t begin, int64_t end) {
    std::vector<float> buffer((std::is_same_v<T, float> ? 0 : 2 * r) + residual.scratch_floats);
    float* residual_scratch = buffer.data() + buffer.size() - residual.scratch_floats;
    for (int64_t i = begin; i < end; ++i) {
      const float* hrow = row_as_float(hp + i * r, buffer.data(), r);
      float* arow = output_row(ap + i * r, buffer.data() + r);
      forward_row<A, N>(hrow, w, b, r, eps, arow, mp[i], rp[i]);
      finish_row(arow, ap + i * r, r);
      residual.row(i, 0, residual_scratch);
    }
  });
}

// pp: (chunks, 3, r) zeroed norm sums, each chunk's added to by the thread that runs it; the residual's rows
// are summed by chunk as well.
template <typename T, Activation A, Norm N, typename Residual>
void backward_kernel(const at::Tensor& grad_a, const at::Tensor& h, const float* mp, const float* rp, const float* w,
                     const float* b, at::Tensor& a, at::Tensor& grad_h, float* pp, int64_t chunks,
                     const Residual& residual) {
  const int64_t rows = h.size(0), r = h.size(1);
  const int64_t rows_per_chunk = (rows + chunks - 1) / chunks;
  const T* hp = h.const_data_ptr<T>();
  const T* gp = grad_a.const_data_ptr<T>();
  T* ap = a.mutable_data_ptr<T>();
  T* ghp = grad_h.mutable_data_ptr<T>();
  at::parallel_for(0, chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
    std::vector<float> buffer((std::is_same_v<T, float> ? r : 5 * r) + residual.scratch_floats);
    float* scratch = buffer.data();
    float* residual_scratch = buffer.data() + buffer.size() - residual.scratch_floats;
    for (int64_t c = chunk_begin; c < chunk_end; ++c) {
      float* acc = pp + c * 3 * r;
      const int64_t end = std::min(rows, (c + 1) * rows_per_chunk);
      for (int64_t i = c * rows_per_chunk; i < end; ++i) {
        const float* hrow = row_as_float(hp + i * r, scratch + r, r);
        const float* grow = row_as_float(gp + i * r, scratch + 2 * r, r);
        float* arow = output_row(ap + i * r, scratch + 3 * r);
        float* ghrow = output_row(ghp + i * r, scratch + 4 * r);
        backward_row<A, N>(grow, hrow, mp[i], rp[i], w, b, r, arow, ghrow, acc, scratch);
        finish_row(arow, ap + i * r, r);
        finish_row(ghrow, ghp + i * r, r);
        residual.row(i, c, residual_scratch);
      }
    }
  });
}

// The column sums of a (chunks, stride) float buffer's first n columns, as a new (n,) tensor of dtype `type`:
// the chunks' partial sums reduced in chunk order (deterministic), in one pass with no ATen reduction.
at::Tensor sum_chunks(const float* partial, int64_t chunks, int64_t stride, int64_t n, at::ScalarType type) {
  std::vector<float> total(partial, partial + n);
  for (int64_t c = 1; c < chunks; ++c) {
    const float* row = partial + c * stride;
    for (int64_t j = 0; j < n; ++j) total[j] += row[j];
  }
  at::Tensor out = at::empty({n}, at::TensorOptions().dtype(type));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, type, "fastadapter_sum_chunks", [&] {
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    for (int64_t j = 0; j < n; ++j) o[j] = static_cast<scalar_t>(total[j]);
  });
  return out;
}

// Calls f(residual functor) for the given residual rows (or NoResidual), in h's dtype.
template <typename T, typename F>
void with_residual(const ResidualRows* rows, float* column_sums, F&& f) {
  if (rows == nullptr) {
    f(NoResidual{});
  } else {
    f(ResidualRowCopy<T>(*rows, column_sums));
  }
}

void check_residual_rows(const ResidualRows& rows, int64_t h_rows) {
  const at::Tensor& src = rows.source;
  TORCH_CHECK(src.dim() == 2 && src.is_contiguous() && src.size(0) == h_rows,
              "fastadapter: the residual source must be a contiguous (", h_rows, ", D) tensor, got ", src.sizes());
  TORCH_CHECK(rows.dest.sizes() == src.sizes() && rows.dest.is_contiguous() &&
                  rows.dest.scalar_type() == src.scalar_type(),
              "fastadapter: the residual destination must be contiguous and match its source");
  TORCH_CHECK(!rows.bias.defined() || (rows.bias.dim() == 1 && rows.bias.size(0) == src.size(1)),
              "fastadapter: the residual bias must have shape (", src.size(1), ",)");
}

// The norm parameters as contiguous float32 (bias undefined when absent): the CPU kernels read them as float.
std::pair<at::Tensor, at::Tensor> float_norm_params(const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  return {weight.to(at::kFloat).contiguous(), bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor()};
}

}  // namespace

void norm_act_forward_cpu_into(const at::Tensor& h, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                               c10::string_view activation, c10::string_view norm, double eps, at::Tensor& a,
                               at::Tensor& mean, at::Tensor& rstd, const ResidualRows* residual) {
  check_norm_act_inputs(h, weight, bias);
  if (residual) check_residual_rows(*residual, h.size(0));
  const Activation act = parse_activation(std::string(activation));
  const Norm nrm = parse_norm(std::string(norm));
  const auto params = float_norm_params(weight, bias);  // not a structured binding: lambdas capture these
  const at::Tensor& w = params.first;
  const at::Tensor& b = params.second;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "fastadapter_norm_act_forward", [&] {
    with_residual<scalar_t>(residual, nullptr, [&](const auto& residual_rows) {
      dispatch_activation_norm(act, nrm, [&](auto act_tag, auto norm_tag) {
        forward_kernel<scalar_t, decltype(act_tag)::value, decltype(norm_tag)::value>(
            h, w.const_data_ptr<float>(), b.defined() ? b.const_data_ptr<float>() : nullptr,
            static_cast<float>(eps), a, mean, rstd, residual_rows);
      });
    });
  });
}

NormActBackwardSums norm_act_backward_cpu_into(const at::Tensor& grad_a, const at::Tensor& h, const at::Tensor& mean,
                                               const at::Tensor& rstd, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& bias, c10::string_view activation,
                                               c10::string_view norm, at::Tensor& a, at::Tensor& grad_h,
                                               const ResidualRows* residual) {
  check_norm_act_backward_inputs(grad_a, h, mean, rstd, weight, bias);
  if (residual) check_residual_rows(*residual, h.size(0));
  const Activation act = parse_activation(std::string(activation));
  const Norm nrm = parse_norm(std::string(norm));
  const int64_t r = h.size(1);
  const at::Tensor g = grad_a.contiguous();
  const at::Tensor m = mean.contiguous(), s = rstd.contiguous();
  const auto params = float_norm_params(weight, bias);  // not a structured binding: lambdas capture these
  const at::Tensor& w = params.first;
  const at::Tensor& b = params.second;
  const int64_t chunks = chunk_count(h.size(0), r);
  const int64_t width = residual ? residual->source.size(1) : 0;
  // Per-chunk partial sums, zeroed: (chunks, 3, r) then (chunks, width). A plain buffer, not a tensor: its
  // fill and reduction cost no ATen calls, which count at the few rows of a caption batch.
  std::vector<float> partial(static_cast<size_t>(chunks * (3 * r + width)));
  float* column_sums = residual ? partial.data() + chunks * 3 * r : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h.scalar_type(), "fastadapter_norm_act_backward", [&] {
    with_residual<scalar_t>(residual, column_sums, [&](const auto& residual_rows) {
      dispatch_activation_norm(act, nrm, [&](auto act_tag, auto norm_tag) {
        backward_kernel<scalar_t, decltype(act_tag)::value, decltype(norm_tag)::value>(
            g, h, m.const_data_ptr<float>(), s.const_data_ptr<float>(), w.const_data_ptr<float>(),
            b.defined() ? b.const_data_ptr<float>() : nullptr, a, grad_h, partial.data(), chunks, residual_rows);
      });
    });
  });
  const float* pp = partial.data();
  return {sum_chunks(pp, chunks, 3 * r, r, weight.scalar_type()),
          sum_chunks(pp + r, chunks, 3 * r, r, weight.scalar_type()),
          sum_chunks(pp + 2 * r, chunks, 3 * r, r, h.scalar_type()),
          residual ? sum_chunks(column_sums, chunks, width, width, residual->source.scalar_type()) : at::Tensor()};
}

}  // namespace fastadapter
