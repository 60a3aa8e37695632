#include "core/data_order.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace holdfast {
namespace {

bool IsPermutation(const std::vector<uint32_t>& p, uint32_t n) {
  if (p.size() != n) return false;
  std::vector<bool> seen(n, false);
  for (uint32_t v : p) {
    if (v >= n || seen[v]) return false;
    seen[v] = true;
  }
  return true;
}

TEST(EpochPermutationTest, IsPermutationForVariousSizes) {
  for (uint32_t n : {0u, 1u, 2u, 10u, 60000u}) {
    for (int64_t epoch : {0, 1, 7}) {
      EXPECT_TRUE(IsPermutation(EpochPermutation(42, epoch, n), n))
          << "n=" << n << " epoch=" << epoch;
    }
  }
}

TEST(EpochPermutationTest, RepeatedCallsAreIdentical) {
  EXPECT_EQ(EpochPermutation(42, 3, 60000), EpochPermutation(42, 3, 60000));
  EXPECT_EQ(EpochPermutation(7, 0, 10), EpochPermutation(7, 0, 10));
}

TEST(EpochPermutationTest, DiffersBetweenEpochsAndSeeds) {
  const std::vector<uint32_t> base = EpochPermutation(42, 0, 1000);
  EXPECT_NE(base, EpochPermutation(42, 1, 1000));
  EXPECT_NE(base, EpochPermutation(43, 0, 1000));
  EXPECT_NE(EpochPermutation(42, 1, 1000), EpochPermutation(42, 2, 1000));
  // Seeds differing only in the high word are different keys.
  EXPECT_NE(base, EpochPermutation(42ULL | (1ULL << 32), 0, 1000));
}

TEST(EpochPermutationTest, IsNotTheIdentity) {
  std::vector<uint32_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0u);
  EXPECT_NE(EpochPermutation(0, 0, 1000), identity);
}

TEST(EpochPermutationTest, FirstPositionIsRoughlyUniform) {
  // Which sample comes first, over many epochs, should be spread over [0, n).
  constexpr uint32_t kN = 5;
  constexpr int kEpochs = 2000;
  std::vector<int> counts(kN, 0);
  for (int e = 0; e < kEpochs; ++e) ++counts[EpochPermutation(9, e, kN)[0]];
  for (uint32_t v = 0; v < kN; ++v) {
    EXPECT_NEAR(counts[v], kEpochs / kN, 120) << "value " << v;
  }
}

// Regression pins: the data order is part of the reproducibility contract and
// must be the same on every platform and in every future version.
TEST(EpochPermutationTest, PinnedSeed42Epoch0N60000) {
  std::vector<uint32_t> p = EpochPermutation(42, 0, 60000);
  ASSERT_EQ(p.size(), 60000u);
  EXPECT_EQ(std::vector<uint32_t>(p.begin(), p.begin() + 8),
            (std::vector<uint32_t>{10003, 44482, 9818, 23554, 37301, 1797, 12600, 11105}));
}

TEST(EpochPermutationTest, PinnedSeed1Epoch3N10) {
  std::vector<uint32_t> p = EpochPermutation(1, 3, 10);
  ASSERT_EQ(p.size(), 10u);
  EXPECT_EQ(p, (std::vector<uint32_t>{7, 5, 0, 8, 3, 9, 4, 6, 1, 2}));
}

TEST(BatchPlanTest, KeepRemainder) {
  BatchPlan plan(10, 3, /*drop_remainder=*/false);
  EXPECT_EQ(plan.num_samples(), 10);
  EXPECT_EQ(plan.batch_size(), 3);
  ASSERT_EQ(plan.num_batches(), 4);
  EXPECT_EQ(plan.Batch(0), (Range{0, 3}));
  EXPECT_EQ(plan.Batch(1), (Range{3, 6}));
  EXPECT_EQ(plan.Batch(2), (Range{6, 9}));
  EXPECT_EQ(plan.Batch(3), (Range{9, 10}));
  EXPECT_EQ(plan.Batch(3).size(), 1);
}

TEST(BatchPlanTest, DropRemainder) {
  BatchPlan plan(10, 3, /*drop_remainder=*/true);
  ASSERT_EQ(plan.num_batches(), 3);
  EXPECT_EQ(plan.Batch(0), (Range{0, 3}));
  EXPECT_EQ(plan.Batch(2), (Range{6, 9}));
}

TEST(BatchPlanTest, ExactMultiple) {
  for (bool drop : {false, true}) {
    BatchPlan plan(9, 3, drop);
    ASSERT_EQ(plan.num_batches(), 3) << "drop=" << drop;
    EXPECT_EQ(plan.Batch(2), (Range{6, 9})) << "drop=" << drop;
  }
}

TEST(BatchPlanTest, BatchLargerThanDataset) {
  BatchPlan keep(5, 8, /*drop_remainder=*/false);
  ASSERT_EQ(keep.num_batches(), 1);
  EXPECT_EQ(keep.Batch(0), (Range{0, 5}));
  BatchPlan drop(5, 8, /*drop_remainder=*/true);
  EXPECT_EQ(drop.num_batches(), 0);
}

TEST(BatchPlanTest, BatchesTileTheEpoch) {
  for (int64_t n : {1, 2, 17, 100, 60000}) {
    for (int64_t b : {1, 3, 32, 128}) {
      BatchPlan plan(n, b, /*drop_remainder=*/false);
      EXPECT_EQ(plan.num_batches(), (n + b - 1) / b);
      int64_t next = 0;
      for (int64_t i = 0; i < plan.num_batches(); ++i) {
        Range r = plan.Batch(i);
        ASSERT_EQ(r.begin, next) << "n=" << n << " b=" << b << " batch " << i;
        ASSERT_GT(r.size(), 0);
        ASSERT_LE(r.size(), b);
        next = r.end;
      }
      EXPECT_EQ(next, n);
    }
  }
}

TEST(ReplicaSliceTest, ContiguousBalancedCover) {
  for (int64_t rows : {0, 1, 5, 50, 51}) {
    for (int world : {1, 2, 3, 4, 7}) {
      SCOPED_TRACE(::testing::Message() << "rows=" << rows << " world=" << world);
      int64_t next = 0;
      int64_t prev_size = -1;
      for (int rank = 0; rank < world; ++rank) {
        Range r = ReplicaSlice(rows, rank, world);
        EXPECT_EQ(r.begin, next) << "rank " << rank;
        EXPECT_GE(r.size(), 0) << "rank " << rank;
        EXPECT_TRUE(r.size() == rows / world || r.size() == rows / world + 1) << "rank " << rank;
        if (prev_size >= 0) {
          // Non-increasing: earlier ranks take the extra samples.
          EXPECT_LE(r.size(), prev_size) << "rank " << rank;
        }
        prev_size = r.size();
        next = r.end;
      }
      EXPECT_EQ(next, rows);
    }
  }
}

TEST(ReplicaSliceTest, ExplicitExample) {
  // 5 rows over 3 ranks: 2, 2, 1.
  EXPECT_EQ(ReplicaSlice(5, 0, 3), (Range{0, 2}));
  EXPECT_EQ(ReplicaSlice(5, 1, 3), (Range{2, 4}));
  EXPECT_EQ(ReplicaSlice(5, 2, 3), (Range{4, 5}));
  // More ranks than rows: the last ranks get empty slices.
  EXPECT_EQ(ReplicaSlice(1, 0, 4), (Range{0, 1}));
  EXPECT_EQ(ReplicaSlice(1, 3, 4), (Range{1, 1}));
}

}  // namespace
}  // namespace holdfast
