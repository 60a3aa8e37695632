// Losses. Each returns the SUM of per-sample losses over a batch and writes
// the gradient of (scale * sum) with respect to the model output. Training
// passes scale = 1 / (global batch size), so replicas holding uneven slices
// of a batch still produce gradients that sum to the single-process mean.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "core/tensor.h"

namespace holdfast {

class Loss {
 public:
  virtual ~Loss() = default;
  virtual std::string name() const = 0;
  // output: (rows x k). target: (rows x k) for regression, (rows x 1) of
  // class indices for classification. grad may be null (evaluation).
  // Returns the sum of the rows' losses in row order; with row_losses (may
  // be null; room for `rows` values), also each row's loss, a function of
  // that row alone (layout-invariant sums add them on a grid).
  virtual double Compute(const Matrix& output, const Matrix& target, float scale, Matrix* grad,
                         double* row_losses = nullptr) const = 0;
  // Whether CountCorrect gives a value (classification losses).
  virtual bool has_accuracy() const { return false; }
  // Correct predictions in the batch, for losses that define accuracy.
  virtual std::optional<int64_t> CountCorrect(const Matrix& /*output*/,
                                              const Matrix& /*target*/) const {
    return std::nullopt;
  }
};

// Softmax + cross-entropy from logits against integer labels (Keras'
// SparseCategoricalCrossentropy(from_logits=True)); numerically stable
// (log-sum-exp with the row maximum subtracted).
class SoftmaxCrossEntropy final : public Loss {
 public:
  std::string name() const override { return "softmax_cross_entropy"; }
  double Compute(const Matrix& output, const Matrix& target, float scale, Matrix* grad,
                 double* row_losses = nullptr) const override;
  bool has_accuracy() const override { return true; }
  std::optional<int64_t> CountCorrect(const Matrix& output, const Matrix& target) const override;
};

// Per sample: mean over the k outputs of (output - target)^2.
class MeanSquaredError final : public Loss {
 public:
  std::string name() const override { return "mse"; }
  double Compute(const Matrix& output, const Matrix& target, float scale, Matrix* grad,
                 double* row_losses = nullptr) const override;
};

// Per sample: mean over the k outputs of |output - target|; the gradient at
// a tie is 0, as in TensorFlow.
class MeanAbsoluteError final : public Loss {
 public:
  std::string name() const override { return "mae"; }
  double Compute(const Matrix& output, const Matrix& target, float scale, Matrix* grad,
                 double* row_losses = nullptr) const override;
};

}  // namespace holdfast
