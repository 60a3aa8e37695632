// The fast fixed-order kernels against their scalar definitions, bit for
// bit, over edge shapes and thread counts; and the grid sum's independence
// of how micro-shards are grouped.
#include "core/internal/fixed_order_gemm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cfenv>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/exact_sum.h"
#include "core/internal/exact_gradient.h"

namespace holdfast::internal {
namespace {

std::vector<float> Random(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool SameBits(const std::vector<double>& a, const std::vector<double>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(double)) == 0;
}

class ThreadsGuard {
 public:
  explicit ThreadsGuard(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ThreadsGuard() { omp_set_num_threads(saved_); }

 private:
  int saved_;
};

struct Shape {
  int64_t m, n, k;
};

class FixedOrderGemmTest : public ::testing::TestWithParam<Shape> {};

// Forward (X.W + b, W's rows contiguous) and input gradient (dY.W^T, W read
// by columns): both operand layouts the layers use, against the reference.
TEST_P(FixedOrderGemmTest, EqualsTheSequentialFmaChainBitForBit) {
  const Shape s = GetParam();
  const std::vector<float> a = Random(s.m * s.k, 1), w = Random(s.k * s.n, 2, 0.05f),
                           wt = Random(s.n * s.k, 3, 0.05f), bias = Random(s.n, 4);
  for (int threads : {1, 2, 3}) {
    ThreadsGuard guard(threads);
    SCOPED_TRACE("threads " + std::to_string(threads));
    std::vector<float> fast(s.m * s.n, -1.0f), ref(s.m * s.n, -2.0f);
    const StridedMatrix am{a.data(), s.k, 1};
    FixedOrderGemm(s.m, s.n, s.k, am, {w.data(), s.n, 1}, bias.data(), fast.data(), s.n);
    ReferenceGemm(s.m, s.n, s.k, am, {w.data(), s.n, 1}, bias.data(), ref.data(), s.n);
    EXPECT_TRUE(SameBits(fast, ref)) << "X.W+b differs";
    FixedOrderGemm(s.m, s.n, s.k, am, {wt.data(), 1, s.k}, nullptr, fast.data(), s.n);
    ReferenceGemm(s.m, s.n, s.k, am, {wt.data(), 1, s.k}, nullptr, ref.data(), s.n);
    EXPECT_TRUE(SameBits(fast, ref)) << "dY.W^T differs";
  }
}

// A row's result does not depend on the rows around it: computing rows
// [r0, r1) alone gives the same bits as inside the whole batch.
TEST_P(FixedOrderGemmTest, ARowsBitsDoNotDependOnTheOtherRows) {
  const Shape s = GetParam();
  if (s.m < 3) GTEST_SKIP() << "needs 3 rows to cut";
  const std::vector<float> a = Random(s.m * s.k, 5), w = Random(s.k * s.n, 6, 0.05f);
  std::vector<float> whole(s.m * s.n);
  FixedOrderGemm(s.m, s.n, s.k, {a.data(), s.k, 1}, {w.data(), s.n, 1}, nullptr, whole.data(), s.n);
  const int64_t r0 = 1, r1 = s.m - 1;
  std::vector<float> part((r1 - r0) * s.n);
  FixedOrderGemm(r1 - r0, s.n, s.k, {a.data() + r0 * s.k, s.k, 1}, {w.data(), s.n, 1}, nullptr,
                 part.data(), s.n);
  EXPECT_EQ(0, std::memcmp(part.data(), whole.data() + r0 * s.n, part.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(Shapes, FixedOrderGemmTest,
                         ::testing::Values(Shape{1, 1, 1}, Shape{5, 7, 3}, Shape{6, 16, 256},
                                           Shape{7, 17, 257}, Shape{50, 256, 784},
                                           Shape{13, 10, 32}, Shape{150, 33, 600},
                                           Shape{145, 520, 70}, Shape{4, 1100, 9}));

TEST(FixedOrderGemmTest, EmptyKGivesTheBias) {
  const std::vector<float> bias = {1.5f, -2.0f};
  std::vector<float> c(4, 9.0f);
  FixedOrderGemm(2, 2, 0, {nullptr, 0, 1}, {nullptr, 2, 1}, bias.data(), c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{1.5f, -2.0f, 1.5f, -2.0f}));
}

struct GradShape {
  int64_t in, out;
  std::vector<int64_t> offsets;
};

class MicroShardGradientTest : public ::testing::TestWithParam<GradShape> {};

TEST_P(MicroShardGradientTest, EqualsTheReferenceBitForBit) {
  const GradShape s = GetParam();
  const int64_t rows = s.offsets.back();
  const std::vector<float> x = Random(rows * s.in, 7), dy = Random(rows * s.out, 8, 0.01f);
  const RowBounds bounds = DenseRowBounds(x.data(), dy.data(), rows, s.in, s.out);
  MicroShardGradient g{x.data(),
                       dy.data(),
                       s.in,
                       s.out,
                       s.offsets,
                       GridScale(BoundExponent(rows * bounds.kernel)),
                       GridScale(BoundExponent(rows * bounds.bias)),
                       nullptr,
                       nullptr};
  for (bool each_row : {false, true}) {
    g.round_each_row = each_row;
    std::vector<double> rk(s.in * s.out), rb(s.out);
    g.kernel_grid = rk.data();
    g.bias_grid = rb.data();
    ReferenceMicroShardDenseGradient(g);
    for (int threads : {1, 2}) {
      ThreadsGuard guard(threads);
      std::vector<double> fk(s.in * s.out, -1), fb(s.out, -1);
      g.kernel_grid = fk.data();
      g.bias_grid = fb.data();
      MicroShardDenseGradient(g);
      EXPECT_TRUE(SameBits(fk, rk)) << "threads " << threads << " round_each_row " << each_row;
      EXPECT_TRUE(SameBits(fb, rb)) << "threads " << threads << " round_each_row " << each_row;
    }
  }
  // The row-rounding kernel leaves the caller's rounding mode as it was.
  EXPECT_EQ(std::fegetround(), FE_TONEAREST);
}

INSTANTIATE_TEST_SUITE_P(Shapes, MicroShardGradientTest,
                         ::testing::Values(GradShape{1, 1, {0, 1}},
                                           GradShape{7, 17, {0, 2, 3, 3, 6}},
                                           GradShape{784, 256, {0, 4, 8, 12, 16, 20}},
                                           GradShape{50, 130, {0, 16, 32, 48, 64}},
                                           GradShape{37, 71, {0, 9, 20, 21, 50}},
                                           GradShape{13, 10, {0, 0}}));

// The weight gradient of `grid` (exponent `bound_exponent`) is within float
// precision of the double-precision sum of x^T dy, element by element.
void ExpectFloatPrecision(const std::vector<float>& x, const std::vector<float>& dy, int64_t in,
                          int64_t out, const std::vector<double>& grid, int64_t bound_exponent) {
  const int64_t rows = static_cast<int64_t>(x.size()) / in;
  std::vector<float> grad(in * out);
  GridToFloat(grid, bound_exponent, grad);
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t j = 0; j < out; ++j) {
      double exact = 0, magnitude = 0;
      for (int64_t r = 0; r < rows; ++r) {
        exact += static_cast<double>(x[r * in + i]) * dy[r * out + j];
        magnitude += std::fabs(static_cast<double>(x[r * in + i]) * dy[r * out + j]);
      }
      EXPECT_NEAR(grad[i * out + j], exact, 1e-6 * magnitude + 1e-30) << i << "," << j;
    }
  }
}

// The grid's point: the sum over micro-shards is the same integer however
// the micro-shards are grouped into ranks (here: summed per group, then the
// groups summed in reverse), so any world size gives the same gradient.
TEST(MicroShardGradientTest, TheGridSumDoesNotDependOnTheGrouping) {
  const int64_t in = 31, out = 21, shards = 16;
  std::vector<int64_t> offsets;
  for (int64_t t = 0; t <= shards; ++t) offsets.push_back(t * 50 / shards);
  const int64_t rows = offsets.back();
  // Values over many orders of magnitude, where float sums do depend on order.
  std::vector<float> x = Random(rows * in, 9), dy = Random(rows * out, 10);
  for (size_t i = 0; i < dy.size(); ++i) dy[i] *= std::ldexp(1.0f, static_cast<int>(i % 40) - 20);
  const RowBounds b = DenseRowBounds(x.data(), dy.data(), rows, in, out);
  const int ks = GridScale(BoundExponent(rows * b.kernel)),
            bs = GridScale(BoundExponent(rows * b.bias));
  std::vector<double> whole(in * out), whole_bias(out);
  MicroShardDenseGradient(
      {x.data(), dy.data(), in, out, offsets, ks, bs, whole.data(), whole_bias.data()});
  for (int groups : {2, 3, 5, 16}) {
    std::vector<double> sum(in * out, 0.0), sum_bias(out, 0.0);
    for (int gi = groups - 1; gi >= 0; --gi) {
      const int64_t t0 = shards * gi / groups, t1 = shards * (gi + 1) / groups;
      std::vector<int64_t> local;
      for (int64_t t = t0; t <= t1; ++t) local.push_back(offsets[t] - offsets[t0]);
      std::vector<double> part(in * out), part_bias(out);
      MicroShardDenseGradient({x.data() + offsets[t0] * in, dy.data() + offsets[t0] * out, in, out,
                               local, ks, bs, part.data(), part_bias.data()});
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += part[i];
      for (size_t i = 0; i < sum_bias.size(); ++i) sum_bias[i] += part_bias[i];
    }
    EXPECT_TRUE(SameBits(sum, whole)) << groups << " groups";
    EXPECT_TRUE(SameBits(sum_bias, whole_bias)) << groups << " groups";
  }
  // And the grid keeps float precision: against a double-precision sum.
  ExpectFloatPrecision(x, dy, in, out, whole, BoundExponent(rows * b.kernel));
}

// With round_each_row the grid sum is the same for ANY cut of the rows, not
// only at micro-shard boundaries: rows summed in pieces of every size, the
// pieces in reverse, equal the whole; and it keeps float precision.
TEST(MicroShardGradientTest, RowRoundingDoesNotDependOnHowRowsAreCut) {
  const int64_t in = 29, out = 19, rows = 41;
  std::vector<float> x = Random(rows * in, 11), dy = Random(rows * out, 12);
  for (size_t i = 0; i < dy.size(); ++i) dy[i] *= std::ldexp(1.0f, static_cast<int>(i % 40) - 20);
  const RowBounds b = DenseRowBounds(x.data(), dy.data(), rows, in, out);
  const int ks = GridScale(BoundExponent(rows * b.kernel)),
            bs = GridScale(BoundExponent(rows * b.bias));
  const std::vector<int64_t> all = {0, rows};
  std::vector<double> whole(in * out), whole_bias(out);
  MicroShardGradient g{x.data(),
                       dy.data(),
                       in,
                       out,
                       all,
                       ks,
                       bs,
                       whole.data(),
                       whole_bias.data(),
                       /*round_each_row=*/true};
  MicroShardDenseGradient(g);
  for (int64_t piece : {1, 2, 7, 40}) {
    std::vector<double> sum(in * out, 0.0), sum_bias(out, 0.0);
    for (int64_t r0 = (rows - 1) / piece * piece; r0 >= 0; r0 -= piece) {
      const int64_t n = std::min(piece, rows - r0);
      const std::vector<int64_t> local = {0, n};
      std::vector<double> part(in * out), part_bias(out);
      MicroShardDenseGradient({x.data() + r0 * in, dy.data() + r0 * out, in, out, local, ks, bs,
                               part.data(), part_bias.data(), true});
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += part[i];
      for (size_t i = 0; i < sum_bias.size(); ++i) sum_bias[i] += part_bias[i];
    }
    EXPECT_TRUE(SameBits(sum, whole)) << "pieces of " << piece;
    EXPECT_TRUE(SameBits(sum_bias, whole_bias)) << "pieces of " << piece;
  }
  ExpectFloatPrecision(x, dy, in, out, whole, BoundExponent(rows * b.kernel));
}

// Rows that cancel exactly give +0, as a sum from 0 does, not the -0 that
// rounding toward -inf makes of x - x: the sign of a zero gradient must not
// depend on whether the cancelling rows were summed together.
TEST(MicroShardGradientTest, RowRoundingCancelsToPositiveZero) {
  const std::vector<float> x = {1.0f, 1.0f}, dy = {0.5f, -0.5f};
  const std::vector<int64_t> offsets = {0, 2};
  double kernel = -1, bias = -1;
  MicroShardDenseGradient({x.data(), dy.data(), 1, 1, offsets, 10, 10, &kernel, &bias, true});
  EXPECT_EQ(kernel, 0.0);
  EXPECT_FALSE(std::signbit(kernel));
  EXPECT_FALSE(std::signbit(bias));
}

// A NaN or inf anywhere makes both bounds infinite, so every replica agrees
// on the non-finite grid and the gradient is the same NaN on any layout
// (a plain max would drop the NaN, and inf * 0 is NaN).
TEST(DenseRowBoundsTest, NonFiniteValuesGiveAnInfiniteBound) {
  std::vector<float> x = {1.0f, 2.0f, 3.0f, 4.0f}, dy = {0.5f, -1.0f, 0.0f, 0.0f};
  RowBounds b = DenseRowBounds(x.data(), dy.data(), 2, 2, 2);
  EXPECT_EQ(b.kernel, 2.0);  // row 0: 2 * 1; row 1: 4 * 0
  EXPECT_EQ(b.bias, 1.0);
  for (float bad : {NAN, -NAN, INFINITY}) {
    std::vector<float> xb = x;
    xb[3] = bad;  // in the row whose dy is zero
    b = DenseRowBounds(xb.data(), dy.data(), 2, 2, 2);
    EXPECT_EQ(BoundExponent(b.kernel), kNonFiniteExponent) << bad;
    std::vector<float> dyb = dy;
    dyb[2] = bad;
    b = DenseRowBounds(x.data(), dyb.data(), 2, 2, 2);
    EXPECT_EQ(BoundExponent(b.bias), kNonFiniteExponent) << bad;
  }
}

TEST(ExactSumTest, BoundExponentAndScale) {
  EXPECT_EQ(BoundExponent(0.0), kZeroExponent);
  EXPECT_EQ(BoundExponent(INFINITY), kNonFiniteExponent);
  EXPECT_EQ(BoundExponent(NAN), kNonFiniteExponent);
  EXPECT_EQ(BoundExponent(1.0), 1);   // 1 < 2^1
  EXPECT_EQ(BoundExponent(0.75), 0);  // 0.75 < 2^0
  EXPECT_EQ(GridScale(1), 49);
  EXPECT_EQ(GridScale(kZeroExponent), 127);
  EXPECT_EQ(GridScale(kNonFiniteExponent), -126);
  std::vector<float> out(2);
  GridToFloat(std::vector<double>{3.0, -1.0}, kNonFiniteExponent, out);
  EXPECT_TRUE(std::isnan(out[0]) && std::isnan(out[1]));
  GridToFloat(std::vector<double>{std::ldexp(3.0, 49), -std::ldexp(1.0, 48)}, 1, out);
  EXPECT_EQ(out[0], 3.0f);
  EXPECT_EQ(out[1], -0.5f);
}

TEST(ExactSumTest, MetricGridSumsDoNotDependOnOrder) {
  const std::vector<float> v = Random(1000, 11, 3.0f);
  double forward = 0, backward = 0;
  for (size_t i = 0; i < v.size(); ++i) forward += RoundToMetricGrid(std::fabs(v[i]));
  for (size_t i = v.size(); i-- > 0;) backward += RoundToMetricGrid(std::fabs(v[i]));
  EXPECT_EQ(forward, backward);
  EXPECT_NEAR(RoundToMetricGrid(0.1), 0.1, 1e-7);
}

}  // namespace
}  // namespace holdfast::internal
