#include "core/loss.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "core/tensor.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

Matrix Rows(std::initializer_list<std::initializer_list<float>> rows) {
  Matrix m(static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows.begin()->size()));
  int64_t r = 0;
  for (const auto& row : rows) {
    int64_t c = 0;
    for (float v : row) m(r, c++) = v;
    ++r;
  }
  return m;
}

Matrix Labels(std::initializer_list<int> labels) {
  Matrix m(static_cast<int64_t>(labels.size()), 1);
  int64_t r = 0;
  for (int l : labels) m(r++, 0) = static_cast<float>(l);
  return m;
}

// Checks grad (written by Compute with `scale`) against central differences
// of scale * Compute(output).
void CheckGradientByFiniteDifferences(const Loss& loss, Matrix output, const Matrix& target,
                                      float scale) {
  SCOPED_TRACE(loss.name());
  Matrix grad;
  const double value = loss.Compute(output, target, scale, &grad);
  ASSERT_TRUE(std::isfinite(value));
  ASSERT_EQ(grad.rows(), output.rows());
  ASSERT_EQ(grad.cols(), output.cols());
  constexpr float kEps = 1e-2f;
  for (int64_t r = 0; r < output.rows(); ++r) {
    for (int64_t c = 0; c < output.cols(); ++c) {
      const float saved = output(r, c);
      output(r, c) = saved + kEps;
      const double plus = loss.Compute(output, target, scale, nullptr);
      output(r, c) = saved - kEps;
      const double minus = loss.Compute(output, target, scale, nullptr);
      output(r, c) = saved;
      const double numeric = scale * (plus - minus) / (2.0 * kEps);
      EXPECT_NEAR(grad(r, c), numeric, 1e-4 + 1e-2 * std::abs(numeric)) << r << "," << c;
    }
  }
}

Matrix RandomLabels(int64_t rows, int classes, uint32_t seed) {
  TestRng rng(seed);
  Matrix m(rows, 1);
  for (int64_t r = 0; r < rows; ++r) m(r, 0) = static_cast<float>(rng.Below(classes));
  return m;
}

TEST(LossTest, Names) {
  EXPECT_EQ(SoftmaxCrossEntropy().name(), "softmax_cross_entropy");
  EXPECT_EQ(MeanSquaredError().name(), "mse");
  EXPECT_EQ(MeanAbsoluteError().name(), "mae");
}

// ---------------------------------------------------------------------------
// SoftmaxCrossEntropy

TEST(SoftmaxCrossEntropyTest, UniformLogitsGiveLnTwo) {
  SoftmaxCrossEntropy ce;
  const Matrix logits = Matrix::Zero(3, 2);
  const Matrix labels = Labels({0, 1, 0});
  Matrix grad;
  const double loss = ce.Compute(logits, labels, 1.0f / 3, &grad);
  EXPECT_NEAR(loss, 3 * std::log(2.0), 1e-6);
  ASSERT_EQ(grad.rows(), 3);
  ASSERT_EQ(grad.cols(), 2);
  // scale * (softmax - onehot).
  EXPECT_NEAR(grad(0, 0), -0.5 / 3, 1e-7);
  EXPECT_NEAR(grad(0, 1), 0.5 / 3, 1e-7);
  EXPECT_NEAR(grad(1, 0), 0.5 / 3, 1e-7);
  EXPECT_NEAR(grad(1, 1), -0.5 / 3, 1e-7);
  EXPECT_NEAR(grad(2, 0), -0.5 / 3, 1e-7);
}

TEST(SoftmaxCrossEntropyTest, HandComputedThreeClasses) {
  SoftmaxCrossEntropy ce;
  const Matrix logits = Rows({{1, 2, 3}});
  const double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  Matrix grad;
  EXPECT_NEAR(ce.Compute(logits, Labels({2}), 1.0f, &grad), std::log(z) - 3.0, 1e-6);
  EXPECT_NEAR(grad(0, 0), std::exp(1.0) / z, 1e-6);
  EXPECT_NEAR(grad(0, 1), std::exp(2.0) / z, 1e-6);
  EXPECT_NEAR(grad(0, 2), std::exp(3.0) / z - 1.0, 1e-6);
  EXPECT_NEAR(ce.Compute(logits, Labels({0}), 1.0f, nullptr), std::log(z) - 1.0, 1e-6);
}

TEST(SoftmaxCrossEntropyTest, StableForExtremeLogits) {
  SoftmaxCrossEntropy ce;
  const Matrix logits = Rows({{1000, -1000}, {1000, -1000}, {1000, 1000}, {-1000, -1000}});
  Matrix grad;
  const double loss = ce.Compute(logits, Labels({0, 1, 1, 0}), 1.0f, &grad);
  // 0 + 2000 + ln 2 + ln 2.
  ASSERT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, 2000 + 2 * std::log(2.0), 1e-3);
  for (int64_t i = 0; i < grad.size(); ++i) ASSERT_TRUE(std::isfinite(grad.data()[i])) << i;
  EXPECT_NEAR(grad(0, 0), 0.0, 1e-7);
  EXPECT_NEAR(grad(0, 1), 0.0, 1e-7);
  EXPECT_NEAR(grad(1, 0), 1.0, 1e-7);
  EXPECT_NEAR(grad(1, 1), -1.0, 1e-7);
  EXPECT_NEAR(grad(2, 0), 0.5, 1e-7);
  EXPECT_NEAR(grad(2, 1), -0.5, 1e-7);
  EXPECT_NEAR(grad(3, 0), -0.5, 1e-7);
  EXPECT_NEAR(grad(3, 1), 0.5, 1e-7);
}

TEST(SoftmaxCrossEntropyTest, GradientMatchesFiniteDifferences) {
  CheckGradientByFiniteDifferences(SoftmaxCrossEntropy(), RandomMatrix(6, 4, -2, 2, 1),
                                   RandomLabels(6, 4, 2), 0.37f);
  CheckGradientByFiniteDifferences(SoftmaxCrossEntropy(), RandomMatrix(3, 10, -3, 3, 3),
                                   RandomLabels(3, 10, 4), 1.0f);
}

TEST(SoftmaxCrossEntropyTest, GradientRowsSumToZero) {
  SoftmaxCrossEntropy ce;
  Matrix grad;
  (void)ce.Compute(RandomMatrix(5, 7, -3, 3, 5), RandomLabels(5, 7, 6), 1.0f, &grad);
  for (int64_t r = 0; r < grad.rows(); ++r) EXPECT_NEAR(grad.row(r).sum(), 0.0f, 1e-6) << r;
}

TEST(SoftmaxCrossEntropyTest, NullGradGivesSameLoss) {
  SoftmaxCrossEntropy ce;
  const Matrix logits = RandomMatrix(4, 3, -2, 2, 7);
  const Matrix labels = RandomLabels(4, 3, 8);
  Matrix grad;
  EXPECT_EQ(ce.Compute(logits, labels, 0.25f, &grad), ce.Compute(logits, labels, 0.25f, nullptr));
}

TEST(SoftmaxCrossEntropyTest, CountCorrect) {
  SoftmaxCrossEntropy ce;
  const Matrix logits = Rows({{0.1f, 0.9f, 0.0f}, {2, 1, 0}, {-1, -2, -0.5f}, {5, 6, 7}});
  std::optional<int64_t> correct = ce.CountCorrect(logits, Labels({1, 0, 0, 2}));
  ASSERT_TRUE(correct.has_value());
  EXPECT_EQ(*correct, 3);
  EXPECT_EQ(ce.CountCorrect(logits, Labels({0, 1, 1, 1})).value_or(-1), 0);
  EXPECT_EQ(ce.CountCorrect(logits, Labels({1, 0, 2, 2})).value_or(-1), 4);
}

// ---------------------------------------------------------------------------
// MeanSquaredError / MeanAbsoluteError

TEST(MeanSquaredErrorTest, HandComputed) {
  MeanSquaredError mse;
  const Matrix out = Rows({{1, 2}, {3, 5}});
  const Matrix target = Rows({{0, 2}, {1, 1}});
  Matrix grad;
  // (1 + 0) / 2 + (4 + 16) / 2.
  EXPECT_NEAR(mse.Compute(out, target, 1.0f, &grad), 10.5, 1e-9);
  ASSERT_EQ(grad.rows(), 2);
  ASSERT_EQ(grad.cols(), 2);
  // 2 (o - t) / k.
  EXPECT_FLOAT_EQ(grad(0, 0), 1.0f);
  EXPECT_FLOAT_EQ(grad(0, 1), 0.0f);
  EXPECT_FLOAT_EQ(grad(1, 0), 2.0f);
  EXPECT_FLOAT_EQ(grad(1, 1), 4.0f);
  (void)mse.Compute(out, target, 0.5f, &grad);
  EXPECT_FLOAT_EQ(grad(1, 1), 2.0f);
  EXPECT_FALSE(mse.CountCorrect(out, target).has_value());
}

TEST(MeanSquaredErrorTest, GradientMatchesFiniteDifferences) {
  CheckGradientByFiniteDifferences(MeanSquaredError(), RandomMatrix(5, 3, -2, 2, 11),
                                   RandomMatrix(5, 3, -2, 2, 12), 0.2f);
  CheckGradientByFiniteDifferences(MeanSquaredError(), RandomMatrix(4, 1, -2, 2, 13),
                                   RandomMatrix(4, 1, -2, 2, 14), 1.0f);
}

TEST(MeanAbsoluteErrorTest, HandComputedWithTieGivingZeroGradient) {
  MeanAbsoluteError mae;
  const Matrix out = Rows({{1, 2}, {3, 5}});
  const Matrix target = Rows({{0, 2}, {4, 1}});
  Matrix grad;
  // (1 + 0) / 2 + (1 + 4) / 2.
  EXPECT_NEAR(mae.Compute(out, target, 1.0f, &grad), 3.0, 1e-9);
  ASSERT_EQ(grad.rows(), 2);
  ASSERT_EQ(grad.cols(), 2);
  // sign(o - t) / k; 0 at the tie.
  EXPECT_FLOAT_EQ(grad(0, 0), 0.5f);
  EXPECT_EQ(grad(0, 1), 0.0f);
  EXPECT_FLOAT_EQ(grad(1, 0), -0.5f);
  EXPECT_FLOAT_EQ(grad(1, 1), 0.5f);
  (void)mae.Compute(out, target, 0.1f, &grad);
  EXPECT_FLOAT_EQ(grad(1, 1), 0.05f);
  EXPECT_FALSE(mae.CountCorrect(out, target).has_value());
}

TEST(MeanAbsoluteErrorTest, GradientMatchesFiniteDifferences) {
  // Keep |output - target| >= 0.1 so that no central difference straddles the kink.
  Matrix target = RandomMatrix(5, 3, -1, 1, 21);
  Matrix delta = RandomMatrix(5, 3, 0.1, 1.0, 22);
  TestRng signs(23);
  for (int64_t i = 0; i < delta.size(); ++i) {
    if (signs.Below(2) == 0) delta.data()[i] = -delta.data()[i];
  }
  CheckGradientByFiniteDifferences(MeanAbsoluteError(), target + delta, target, 0.3f);
}

// ---------------------------------------------------------------------------
// Uneven splits: what replicas holding parts of one global batch compute.

void CheckSplitAdds(const Loss& loss, const Matrix& out, const Matrix& target, int64_t split) {
  SCOPED_TRACE(loss.name());
  const float scale = 1.0f / static_cast<float>(out.rows());
  Matrix whole_grad, head_grad, tail_grad;
  const double whole = loss.Compute(out, target, scale, &whole_grad);
  const int64_t tail_rows = out.rows() - split;
  const double head = loss.Compute(out.topRows(split), target.topRows(split), scale, &head_grad);
  const double tail =
      loss.Compute(out.bottomRows(tail_rows), target.bottomRows(tail_rows), scale, &tail_grad);
  EXPECT_NEAR(whole, head + tail, 1e-6 * std::abs(whole) + 1e-9);
  ASSERT_EQ(head_grad.rows(), split);
  ASSERT_EQ(tail_grad.rows(), tail_rows);
  for (int64_t r = 0; r < out.rows(); ++r) {
    for (int64_t c = 0; c < out.cols(); ++c) {
      const float part = r < split ? head_grad(r, c) : tail_grad(r - split, c);
      EXPECT_FLOAT_EQ(whole_grad(r, c), part) << r << "," << c;
    }
  }
}

TEST(LossSplitTest, LossSumsAddAndGradientsConcatenate) {
  CheckSplitAdds(SoftmaxCrossEntropy(), RandomMatrix(7, 4, -2, 2, 31), RandomLabels(7, 4, 32), 3);
  CheckSplitAdds(MeanSquaredError(), RandomMatrix(7, 2, -2, 2, 33), RandomMatrix(7, 2, -2, 2, 34),
                 4);
  CheckSplitAdds(MeanAbsoluteError(), RandomMatrix(7, 2, -2, 2, 35), RandomMatrix(7, 2, -2, 2, 36),
                 1);
}

}  // namespace
}  // namespace holdfast
