// The fast fixed-order kernels against their scalar definitions, bit for
// bit, over edge shapes and thread counts, in the three operand layouts the
// dense layer uses; and the metric grid's independence of order.
#include "core/internal/fixed_order_gemm.h"

#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/exact_sum.h"

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

// Forward (X.W + b, W's rows contiguous), input gradient (dY.W^T, W read
// by columns) and weight gradient (X^T.dY, X read down its columns): every
// operand layout the layers use, against the reference.
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
    // a^T: element (i, p) at p * m + i, as X^T is read for dW = X^T dY.
    const StridedMatrix at{a.data(), 1, s.m};
    FixedOrderGemm(s.m, s.n, s.k, at, {w.data(), s.n, 1}, nullptr, fast.data(), s.n);
    ReferenceGemm(s.m, s.n, s.k, at, {w.data(), s.n, 1}, nullptr, ref.data(), s.n);
    EXPECT_TRUE(SameBits(fast, ref)) << "X^T.dY differs";
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
  // Likewise rows of X^T.dY (a replica's share of a weight gradient).
  FixedOrderGemm(s.m, s.n, s.k, {a.data(), 1, s.m}, {w.data(), s.n, 1}, nullptr, whole.data(), s.n);
  FixedOrderGemm(r1 - r0, s.n, s.k, {a.data() + r0, 1, s.m}, {w.data(), s.n, 1}, nullptr,
                 part.data(), s.n);
  EXPECT_EQ(0, std::memcmp(part.data(), whole.data() + r0 * s.n, part.size() * sizeof(float)));
}

// Edges of the 6 x 16 tile (every count of rows left over, 1 to 5, runs its
// own kernel), of the 144-row A block and of the 512-long K pieces (1100:
// three pieces, the last one short).
INSTANTIATE_TEST_SUITE_P(Shapes, FixedOrderGemmTest,
                         ::testing::Values(Shape{1, 1, 1}, Shape{5, 7, 3}, Shape{6, 16, 256},
                                           Shape{7, 17, 257}, Shape{50, 256, 784},
                                           Shape{13, 10, 32}, Shape{150, 33, 600},
                                           Shape{145, 520, 70}, Shape{4, 1100, 9},
                                           Shape{7, 33, 1100}, Shape{9, 40, 20}));

TEST(FixedOrderGemmTest, EmptyKGivesTheBias) {
  const std::vector<float> bias = {1.5f, -2.0f};
  std::vector<float> c(4, 9.0f);
  FixedOrderGemm(2, 2, 0, {nullptr, 0, 1}, {nullptr, 2, 1}, bias.data(), c.data(), 2);
  EXPECT_EQ(c, (std::vector<float>{1.5f, -2.0f, 1.5f, -2.0f}));
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
