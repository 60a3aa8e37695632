#include "core/optimizer.h"

#include <cmath>
#include <sstream>

#include "core/check.h"

namespace holdfast {
namespace {
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
  const float lr = lr_, mu = momentum_;
  const int64_t n = static_cast<int64_t>(params.size());
  if (mu == 0.0f) {
#pragma omp parallel for simd schedule(static) if (n > (1 << 18))
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * g[i];
  } else {
    float* v = velocity_.data();
#pragma omp parallel for simd schedule(static) if (n > (1 << 18))
    for (int64_t i = 0; i < n; ++i) {
      v[i] = mu * v[i] - lr * g[i];
      p[i] += v[i];
    }
  }
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
  const float alpha = static_cast<float>(lr_ * std::sqrt(1.0 - std::pow(double{beta2_}, t)) /
                                         (1.0 - std::pow(double{beta1_}, t)));
  const float b1 = beta1_, b2 = beta2_, eps = epsilon_;
  float* p = params.data();
  const float* g = grads.data();
  float* m = m_.data();
  float* v = v_.data();
  const int64_t n = static_cast<int64_t>(params.size());
  // Element-wise, so the result does not depend on the thread count.
#pragma omp parallel for simd schedule(static) if (n > (1 << 18))
  for (int64_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    p[i] -= alpha * m[i] / (std::sqrt(v[i]) + eps);
  }
  ++iterations_;
}

std::vector<OptimizerSlot> Adam::slots() {
  return {{"m", {m_.data(), m_.size()}}, {"v", {v_.data(), v_.size()}}};
}

}  // namespace holdfast
