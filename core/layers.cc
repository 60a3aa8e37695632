#include "core/layers.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "core/check.h"
#include "core/internal/fixed_order_gemm.h"
#include "core/random.h"

namespace holdfast {

void Layer::ParameterGradients(const Matrix&, const Matrix&, size_t begin, size_t end) {
  HOLDFAST_CHECK(begin == end, kind() << " layer has parameters but no layout-invariant gradient "
                                         "(ParameterGradients); train it with "
                                         "--layout-invariant off");
}

// ---- Dense ------------------------------------------------------------------

int Dense::Build(int input_width, int index, ParameterStore* store) {
  if (units_ <= 0) throw std::invalid_argument("Dense units must be positive");
  inputs_ = input_width;
  index_ = index;
  store_ = store;
  const std::string prefix = "dense_" + std::to_string(index);
  kernel_ = store->Declare(prefix + "/kernel", {input_width, units_});
  bias_ = store->Declare(prefix + "/bias", {units_});
  return units_;
}

void Dense::Initialize(uint64_t seed) {
  // Glorot uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)).
  const float limit = std::sqrt(6.0f / static_cast<float>(inputs_ + units_));
  PhiloxStream stream(seed, RandomDomain::kInit, static_cast<uint32_t>(index_), 0);
  float* w = store_->param(kernel_);
  const size_t n = store_->tensors()[kernel_].size;
  for (size_t i = 0; i < n; ++i) w[i] = limit * (2.0f * stream.NextUniform() - 1.0f);
  float* b = store_->param(bias_);
  for (int i = 0; i < units_; ++i) b[i] = 0.0f;
}

void Dense::Forward(const Matrix& x, Matrix* y, const StepContext& ctx) {
  fixed_order_ = ctx.fixed_order;
  y->resize(x.rows(), units_);
  if (fixed_order_) {
    internal::FixedOrderGemm(x.rows(), units_, inputs_, {x.data(), inputs_, 1},
                             {store_->param(kernel_), units_, 1}, store_->param(bias_), y->data(),
                             units_);
    return;
  }
  MatrixMap w = store_->ParamMatrix(kernel_);
  RowVectorMap b(store_->param(bias_), units_);
  y->noalias() = x * w;
  y->rowwise() += b;
}

void Dense::Backward(const Matrix& x, const Matrix&, const Matrix& dy, Matrix* dx) {
  if (fixed_order_) {
    if (dx != nullptr) {
      dx->resize(dy.rows(), inputs_);
      // dx[r][i] = chain over j of dy[r][j] * w[i][j]: W read along its rows.
      internal::FixedOrderGemm(dy.rows(), inputs_, units_, {dy.data(), units_, 1},
                               {store_->param(kernel_), 1, units_}, nullptr, dx->data(), inputs_);
    }
    return;
  }
  MatrixMap dw = store_->GradMatrix(kernel_);
  RowVectorMap db(store_->grad(bias_), units_);
  dw.noalias() = x.transpose() * dy;
  db = dy.colwise().sum();
  if (dx != nullptr) {
    MatrixMap w = store_->ParamMatrix(kernel_);
    dx->resize(dy.rows(), inputs_);
    dx->noalias() = dy * w.transpose();
  }
}

void Dense::ParameterGradients(const Matrix& x, const Matrix& dy, size_t begin, size_t end) {
  HOLDFAST_CHECK(x.rows() == dy.rows() && x.cols() == inputs_ && dy.cols() == units_,
                 "dense_" << index_ << " gradients from " << x.rows() << "x" << x.cols()
                          << " inputs and " << dy.rows() << "x" << dy.cols() << " gradients");
  const TensorSpec& k = store_->tensors()[kernel_];
  const TensorSpec& b = store_->tensors()[bias_];
  const int64_t rows = x.rows();
  // Kernel rows [i0, i1): dW[i][j] = chain over rows r of x[r][i] * dy[r][j],
  // i.e. X^T dY with X read down its columns.
  const size_t klo = std::max(begin, k.offset), khi = std::min(end, k.offset + k.size);
  if (klo < khi) {
    const size_t out = static_cast<size_t>(units_);
    HOLDFAST_CHECK((klo - k.offset) % out == 0 && (khi - k.offset) % out == 0,
                   "dense_" << index_ << " kernel gradient cut inside a row");
    const int64_t i0 = static_cast<int64_t>((klo - k.offset) / out);
    const int64_t i1 = static_cast<int64_t>((khi - k.offset) / out);
    internal::FixedOrderGemm(i1 - i0, units_, rows, {x.data() + i0, 1, inputs_},
                             {dy.data(), units_, 1}, nullptr, store_->grad(kernel_) + i0 * units_,
                             units_);
  }
  // Bias elements [j0, j1): the chain over rows of dy[r][j] + (...), from 0.
  const size_t blo = std::max(begin, b.offset), bhi = std::min(end, b.offset + b.size);
  if (blo < bhi) {
    const int64_t j0 = static_cast<int64_t>(blo - b.offset),
                  j1 = static_cast<int64_t>(bhi - b.offset);
    float* db = store_->grad(bias_);
    for (int64_t j = j0; j < j1; ++j) db[j] = 0.0f;
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = dy.data() + r * units_;
      for (int64_t j = j0; j < j1; ++j) db[j] = db[j] + row[j];
    }
  }
}

size_t Dense::param_begin() const { return store_->tensors()[kernel_].offset; }

size_t Dense::param_end() const {
  const TensorSpec& b = store_->tensors()[bias_];
  return b.offset + b.size;
}

// ---- ReLU -------------------------------------------------------------------

void ReLU::Forward(const Matrix& x, Matrix* y, const StepContext&) { *y = x.cwiseMax(0.0f); }

void ReLU::Backward(const Matrix&, const Matrix& y, const Matrix& dy, Matrix* dx) {
  if (dx == nullptr) return;
  *dx = (y.array() > 0.0f).select(dy, 0.0f);
}

// ---- Dropout ----------------------------------------------------------------

Dropout::Dropout(float rate) : rate_(rate) {
  if (!(rate >= 0.0f && rate < 1.0f)) throw std::invalid_argument("dropout rate must be in [0, 1)");
}

std::string Dropout::config() const {
  char buf[32];
  std::snprintf(buf, sizeof buf, "rate=%.9g", rate_);
  return buf;
}

int Dropout::Build(int input_width, int index, ParameterStore*) {
  index_ = index;
  width_ = input_width;
  return input_width;
}

void Dropout::Forward(const Matrix& x, Matrix* y, const StepContext& ctx) {
  mask_active_ = ctx.training && rate_ > 0.0f;
  if (!mask_active_) {
    *y = x;
    return;
  }
  const float keep_scale = 1.0f / (1.0f - rate_);
  mask_.resize(x.rows(), x.cols());
  const uint64_t step = static_cast<uint64_t>(ctx.step);
  const PhiloxKey key = KeyFromSeed(ctx.seed);
  const uint32_t step_lo = static_cast<uint32_t>(step);
  // Layer index and the step's high bits share word 2; word 3 is the domain.
  const uint32_t word2 = static_cast<uint32_t>(index_) | static_cast<uint32_t>(step >> 32) << 16;
  const uint32_t domain = static_cast<uint32_t>(RandomDomain::kDropout);
  // Element (global row R, column c) is number e = R * width + c of the
  // stream: lane e % 4 of block e / 4.
  float* m = mask_.data();
  const int64_t rows = x.rows(), cols = x.cols();
  for (int64_t r = 0; r < rows; ++r) {
    const uint64_t e0 = static_cast<uint64_t>(r + ctx.first_row) * static_cast<uint64_t>(cols);
    uint64_t block = e0 / 4;
    int lane = static_cast<int>(e0 % 4);
    PhiloxCounter bits = Philox4x32({static_cast<uint32_t>(block), step_lo, word2, domain}, key);
    for (int64_t c = 0; c < cols; ++c) {
      if (lane == 4) {
        ++block;
        lane = 0;
        bits = Philox4x32({static_cast<uint32_t>(block), step_lo, word2, domain}, key);
      }
      const float u = static_cast<float>(bits[lane++] >> 8) * 0x1.0p-24f;
      m[r * cols + c] = u < rate_ ? 0.0f : keep_scale;
    }
  }
  *y = x.cwiseProduct(mask_);
}

void Dropout::Backward(const Matrix&, const Matrix&, const Matrix& dy, Matrix* dx) {
  if (dx == nullptr) return;
  if (mask_active_) {
    *dx = dy.cwiseProduct(mask_);
  } else {
    *dx = dy;
  }
}

}  // namespace holdfast
