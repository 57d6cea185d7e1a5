// The LM loss op's cpu backend: chunks of tokens whose float32 logits (about 32 MiB) come from one MKL GEMM; a
// vectorised pass per row (parallel over the chunk's rows) gives the log-sum-exp and the loss and turns the logits
// into dloss/dz in place; two more GEMMs take that to the hidden states' (and, when the head trains, the weight's)
// gradient. Nothing of size T x V exists.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "../../common/cpu/vec_math.h"
#include "../lm_loss.h"

namespace fastadapter {
namespace {

using cpu::fast_exp;
using cpu::horizontal_sum;
using cpu::kLanes;
using cpu::Vec;

struct RowPass {
  const int64_t* labels;
  int64_t ignore_index;
  float eps;
  float* loss;   // per token, nullptr in backward
  float* lse;    // written in forward, read in backward
  bool forward;  // compute lse and loss from the logits
};

// One row of logits z (V): its lse and loss; then, when scale is non-zero, z becomes scale (softmax - targets).
void row(float* z, int64_t vocab, int64_t t, const RowPass& p, float scale, bool grads) {
  const int64_t label = p.labels[t];
  const bool valid = label != p.ignore_index;
  if (p.forward) {
    Vec mx(-INFINITY);
    int64_t j = 0;
    for (; j + kLanes <= vocab; j += kLanes) mx = at::vec::maximum(mx, Vec::loadu(z + j));
    float lanes[kLanes];
    mx.store(lanes);
    float m = -INFINITY;
    for (int64_t k = 0; k < kLanes; ++k) m = std::max(m, lanes[k]);
    for (; j < vocab; ++j) m = std::max(m, z[j]);
    Vec sum(0.f), total(0.f);
    for (j = 0; j + kLanes <= vocab; j += kLanes) {
      const Vec v = Vec::loadu(z + j);
      sum = sum + fast_exp(v - Vec(m));
      total = total + v;
    }
    float s = horizontal_sum(sum), zsum = horizontal_sum(total);
    for (; j < vocab; ++j) {
      s += std::exp(z[j] - m);
      zsum += z[j];
    }
    const float lse = m + std::log(s);
    p.lse[t] = lse;
    p.loss[t] = valid ? lse - (1.f - p.eps) * z[label] - p.eps * zsum / static_cast<float>(vocab) : 0.f;
  }
  if (!grads) return;
  if (!valid) {
    std::fill(z, z + vocab, 0.f);
    return;
  }
  const float lse = p.lse[t], uniform = p.eps / static_cast<float>(vocab);
  int64_t j = 0;
  for (; j + kLanes <= vocab; j += kLanes) {
    (Vec(scale) * (fast_exp(Vec::loadu(z + j) - Vec(lse)) - Vec(uniform))).store(z + j);
  }
  for (; j < vocab; ++j) z[j] = scale * (std::exp(z[j] - lse) - uniform);
  z[label] -= scale * (1.f - p.eps);
}

struct Grads {
  Tensor hidden, weight, bias;  // float32, undefined when not asked for
};

// The chunked walk both directions share: logits per chunk, the row pass, then the gradient GEMMs.
void walk(const Tensor& h32, const Tensor& w32, const OptTensor& b32, const RowPass& pass, const float* scales,
          float uniform_scale, Grads& g) {
  const int64_t tokens = h32.size(0), vocab = w32.size(0), step = lm_loss_chunk_rows(vocab);
  const bool grads = g.hidden.defined() || g.weight.defined() || g.bias.defined();
  Tensor buffer = at::empty({std::min(step, tokens) * vocab}, h32.options());
  for (int64_t t0 = 0; t0 < tokens; t0 += step) {
    const int64_t n = std::min(step, tokens - t0);
    Tensor z = buffer.narrow(0, 0, n * vocab).view({n, vocab});
    const Tensor h = h32.narrow(0, t0, n);
    if (b32) {
      at::addmm_out(z, *b32, h, w32.t());
    } else {
      at::mm_out(z, h, w32.t());
    }
    float* zp = z.data_ptr<float>();
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        row(zp + i * vocab, vocab, t0 + i, pass, scales ? scales[t0 + i] : uniform_scale, grads);
      }
    });
    if (g.hidden.defined()) {
      Tensor out = g.hidden.narrow(0, t0, n);
      at::mm_out(out, z, w32);
    }
    if (g.weight.defined()) g.weight.addmm_(z.t(), h);
    if (g.bias.defined()) g.bias.add_(z.sum(0));
  }
}

Grads new_grads(const Tensor& hidden, const Tensor& weight, bool hidden_grad, bool weight_grad, bool bias_grad) {
  const auto f32 = hidden.options().dtype(at::kFloat);
  return {hidden_grad ? at::empty(hidden.sizes(), f32) : Tensor(),
          weight_grad ? at::zeros(weight.sizes(), f32) : Tensor(), bias_grad ? at::zeros({weight.size(0)}, f32)
                                                                             : Tensor()};
}

std::tuple<Tensor, Tensor, Tensor> finish(const Grads& g, const Tensor& hidden, const Tensor& weight) {
  const auto cast = [](const Tensor& t, const Tensor& like) {
    return t.defined() ? t.to(like.scalar_type()) : like.new_empty({0});
  };
  return {cast(g.hidden, hidden), cast(g.weight, weight), cast(g.bias, weight)};
}

OptTensor float_bias(const OptTensor& bias) {
  return bias ? OptTensor(bias->to(at::kFloat).contiguous()) : OptTensor();
}

LmLossForwardResult forward_cpu(const Tensor& hidden, const Tensor& weight, const OptTensor& bias,
                                const Tensor& labels, double label_smoothing, int64_t ignore_index,
                                c10::string_view reduction, bool hidden_grad, bool weight_grad, bool bias_grad) {
  const Tensor h32 = hidden.to(at::kFloat).contiguous(), w32 = weight.to(at::kFloat).contiguous();
  const Tensor labels_c = labels.contiguous();
  const int64_t tokens = h32.size(0);
  const auto f32 = h32.options();
  Tensor loss = at::empty({tokens}, f32), lse = at::empty({tokens}, f32);
  const bool none = reduction == "none", precompute = !none && (hidden_grad || weight_grad || bias_grad);
  const double count = (labels_c != ignore_index).sum().item<double>();
  const float scale = reduction == "mean" ? static_cast<float>(1.0 / count) : 1.f;  // inf for no tokens: unused
  Grads g = precompute ? new_grads(hidden, weight, hidden_grad, weight_grad, bias_grad) : Grads{};
  const RowPass pass{labels_c.data_ptr<int64_t>(), ignore_index, static_cast<float>(label_smoothing),
                     loss.data_ptr<float>(), lse.data_ptr<float>(), true};
  walk(h32, w32, float_bias(bias), pass, nullptr, scale, g);
  const Tensor total = loss.sum();
  const Tensor out = none ? loss : reduction == "mean" ? total / count : total;  // 0/0 = NaN, as F.cross_entropy
  auto [gh, gw, gb] = finish(g, hidden, weight);
  return {out, lse, gh, gw, gb};
}

LmLossBackwardResult backward_cpu(const Tensor& grad_loss, const Tensor& hidden, const Tensor& weight,
                                  const OptTensor& bias, const Tensor& labels, const Tensor& lse,
                                  double label_smoothing, int64_t ignore_index, bool hidden_grad, bool weight_grad,
                                  bool bias_grad) {
  const Tensor h32 = hidden.to(at::kFloat).contiguous(), w32 = weight.to(at::kFloat).contiguous();
  const Tensor labels_c = labels.contiguous(), lse_c = lse.to(at::kFloat).contiguous();
  const Tensor scales = grad_loss.to(at::kFloat).contiguous();
  Grads g = new_grads(hidden, weight, hidden_grad, weight_grad, bias_grad);
  const RowPass pass{labels_c.data_ptr<int64_t>(), ignore_index, static_cast<float>(label_smoothing), nullptr,
                     const_cast<float*>(lse_c.data_ptr<float>()), false};
  walk(h32, w32, float_bias(bias), pass, scales.data_ptr<float>(), 0.f, g);
  return finish(g, hidden, weight);
}

[[maybe_unused]] const bool registered = (lm_loss_backends().add("cpu", {forward_cpu, backward_cpu}), true);

}  // namespace
}  // namespace fastadapter
