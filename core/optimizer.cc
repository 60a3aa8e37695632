#include "core/optimizer.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "core/check.h"

namespace holdfast {
namespace {

// Element-wise updates run as a vectorised kernel over chunks, with OpenMP
// splitting large buffers into chunks across threads. Each element's result
// depends only on that element, so it is the same for any thread count.
constexpr int64_t kChunk = 1 << 16;

template <typename Kernel>
void ForEachChunk(int64_t n, const Kernel& kernel) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 2)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk;
    kernel(begin, std::min(n, begin + kChunk) - begin);
  }
}

void SgdKernel(float* __restrict p, const float* __restrict g, int64_t n, float lr) {
  for (int64_t i = 0; i < n; ++i) p[i] -= lr * g[i];
}

void MomentumKernel(float* __restrict p, const float* __restrict g, float* __restrict v, int64_t n,
                    float lr, float mu) {
  for (int64_t i = 0; i < n; ++i) {
    v[i] = mu * v[i] - lr * g[i];
    p[i] += v[i];
  }
}

void AdamKernel(float* __restrict p, const float* __restrict g, float* __restrict m,
                float* __restrict v, int64_t n, float alpha, float b1, float b2, float eps) {
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    p[i] -= alpha * m[i] / (std::sqrt(v[i]) + eps);
  }
}

void CheckSizes(size_t slots, std::span<float> params, std::span<const float> grads) {
  HOLDFAST_CHECK(params.size() == grads.size() && params.size() == slots,
                 "optimizer built for " << slots << " parameters, got " << params.size()
                                        << " parameters and " << grads.size() << " gradients");
}
}  // namespace

std::string SGD::Signature() const {
  std::ostringstream out;
  out << "sgd(lr=" << lr_ << ",momentum=" << momentum_ << ")";
  return out.str();
}

void SGD::Build(size_t size) {
  if (momentum_ != 0.0f) velocity_.assign(size, 0.0f);
  size_ = size;
}

void SGD::Apply(std::span<float> params, std::span<const float> grads) {
  CheckSizes(size_, params, grads);
  float* p = params.data();
  const float* g = grads.data();
  float* v = velocity_.data();
  const float lr = learning_rate_, mu = momentum_;
  ForEachChunk(static_cast<int64_t>(params.size()), [&](int64_t b, int64_t n) {
    if (mu == 0.0f) {
      SgdKernel(p + b, g + b, n, lr);
    } else {
      MomentumKernel(p + b, g + b, v + b, n, lr, mu);
    }
  });
  ++iterations_;
}

std::vector<OptimizerSlot> SGD::slots() {
  if (momentum_ == 0.0f) return {};
  return {{"momentum", {velocity_.data(), velocity_.size()}}};
}

std::string Adam::Signature() const {
  std::ostringstream out;
  out << "adam(lr=" << lr_ << ",beta1=" << beta1_ << ",beta2=" << beta2_ << ",eps=" << epsilon_
      << ")";
  return out.str();
}

void Adam::Build(size_t size) {
  m_.assign(size, 0.0f);
  v_.assign(size, 0.0f);
}

void Adam::Apply(std::span<float> params, std::span<const float> grads) {
  CheckSizes(m_.size(), params, grads);
  // The bias correction in double, as a function of the step alone, so it
  // is the same on every replica and after a resume.
  const double t = static_cast<double>(iterations_ + 1);
  const float alpha =
      static_cast<float>(learning_rate_ * std::sqrt(1.0 - std::pow(double{beta2_}, t)) /
                         (1.0 - std::pow(double{beta1_}, t)));
  float* p = params.data();
  const float* g = grads.data();
  float* m = m_.data();
  float* v = v_.data();
  ForEachChunk(static_cast<int64_t>(params.size()), [&](int64_t b, int64_t n) {
    AdamKernel(p + b, g + b, m + b, v + b, n, alpha, beta1_, beta2_, epsilon_);
  });
  ++iterations_;
}

std::vector<OptimizerSlot> Adam::slots() {
  return {{"m", {m_.data(), m_.size()}}, {"v", {v_.data(), v_.size()}}};
}

}  // namespace holdfast
