#include "core/loss.h"

#include <cmath>

#include "core/check.h"

namespace holdfast {
namespace {
void CheckShapes(const Matrix& output, const Matrix& target, bool labels) {
  HOLDFAST_CHECK(output.rows() == target.rows(),
                 "output has " << output.rows() << " rows, target " << target.rows());
  if (labels) {
    HOLDFAST_CHECK(target.cols() == 1, "labels must be one column");
  } else {
    HOLDFAST_CHECK(output.cols() == target.cols(),
                   "output has " << output.cols() << " columns, target " << target.cols());
  }
}
}  // namespace

double SoftmaxCrossEntropy::Compute(const Matrix& output, const Matrix& target, float scale,
                                    Matrix* grad, double* row_losses) const {
  CheckShapes(output, target, true);
  const int64_t rows = output.rows(), k = output.cols();
  if (grad != nullptr) grad->resize(rows, k);
  double total = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const auto logits = output.row(r);
    const int label = static_cast<int>(target(r, 0));
    HOLDFAST_CHECK(label >= 0 && label < k, "label " << label << " outside [0, " << k << ")");
    // log softmax_j = (z_j - max) - log(sum_i exp(z_i - max)): never overflows.
    const float max = logits.maxCoeff();
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(static_cast<double>(logits(j) - max));
    const double log_sum = std::log(sum);
    const double row_loss = log_sum - static_cast<double>(logits(label) - max);
    if (row_losses != nullptr) row_losses[r] = row_loss;
    total += row_loss;
    if (grad != nullptr) {
      for (int64_t j = 0; j < k; ++j) {
        const double p = std::exp(static_cast<double>(logits(j) - max) - log_sum);
        (*grad)(r, j) = static_cast<float>(scale * (p - (j == label ? 1.0 : 0.0)));
      }
    }
  }
  return total;
}

std::optional<int64_t> SoftmaxCrossEntropy::CountCorrect(const Matrix& output,
                                                         const Matrix& target) const {
  CheckShapes(output, target, true);
  int64_t correct = 0;
  for (int64_t r = 0; r < output.rows(); ++r) {
    Eigen::Index best;
    output.row(r).maxCoeff(&best);
    correct += static_cast<int>(target(r, 0)) == static_cast<int>(best);
  }
  return correct;
}

namespace {
// Sum over rows of per_row(row) / k, in row order; each row's value alone
// into row_losses.
template <typename PerRow>
double SumRows(const Matrix& diff, double* row_losses, const PerRow& per_row) {
  const double k = static_cast<double>(diff.cols());
  double total = 0;
  for (int64_t r = 0; r < diff.rows(); ++r) {
    const double row_loss = per_row(diff.row(r).cast<double>()) / k;
    if (row_losses != nullptr) row_losses[r] = row_loss;
    total += row_loss;
  }
  return total;
}
}  // namespace

double MeanSquaredError::Compute(const Matrix& output, const Matrix& target, float scale,
                                 Matrix* grad, double* row_losses) const {
  CheckShapes(output, target, false);
  const double k = static_cast<double>(output.cols());
  const Matrix diff = output - target;
  if (grad != nullptr) *grad = diff * static_cast<float>(2.0 * scale / k);
  return SumRows(diff, row_losses, [](const auto& row) { return row.squaredNorm(); });
}

double MeanAbsoluteError::Compute(const Matrix& output, const Matrix& target, float scale,
                                  Matrix* grad, double* row_losses) const {
  CheckShapes(output, target, false);
  const double k = static_cast<double>(output.cols());
  const Matrix diff = output - target;
  if (grad != nullptr) {
    const float g = static_cast<float>(scale / k);
    *grad = diff.unaryExpr([g](float d) { return d > 0 ? g : (d < 0 ? -g : 0.0f); });
  }
  return SumRows(diff, row_losses, [](const auto& row) { return row.cwiseAbs().sum(); });
}

}  // namespace holdfast
