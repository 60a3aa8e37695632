#include "core/random.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace holdfast {
namespace {

// Known-answer vectors of Philox4x32-10 from Random123's kat_vectors.
TEST(Philox4x32Test, KnownAnswerZero) {
  PhiloxCounter out = Philox4x32({0, 0, 0, 0}, {0, 0});
  EXPECT_EQ(out, (PhiloxCounter{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
}

TEST(Philox4x32Test, KnownAnswerAllOnes) {
  PhiloxCounter out =
      Philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff});
  EXPECT_EQ(out, (PhiloxCounter{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
}

TEST(Philox4x32Test, KnownAnswerPi) {
  PhiloxCounter out =
      Philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0});
  EXPECT_EQ(out, (PhiloxCounter{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(KeyFromSeedTest, SplitsLowAndHighWords) {
  EXPECT_EQ(KeyFromSeed(0x0123456789abcdefULL), (PhiloxKey{0x89abcdef, 0x01234567}));
}

TEST(PhiloxStreamTest, WordsAreLanesOfPhiloxBlocks) {
  const uint64_t seed = 0xfeedfacecafebeefULL;
  PhiloxStream stream(seed, RandomDomain::kDropout, 17, 99);
  for (uint32_t i = 0; i < 40; ++i) {
    PhiloxCounter block = Philox4x32({i / 4, 17, 99, static_cast<uint32_t>(RandomDomain::kDropout)},
                                     KeyFromSeed(seed));
    EXPECT_EQ(stream.NextU32(), block[i % 4]) << "word " << i;
  }
}

TEST(PhiloxStreamTest, NextUniformInUnitIntervalWithMeanOneHalf) {
  PhiloxStream stream(1234, RandomDomain::kInit, 0, 0);
  constexpr int kDraws = 100000;
  double sum = 0;
  float lo = 1, hi = 0;
  for (int i = 0; i < kDraws; ++i) {
    float u = stream.NextUniform();
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
    lo = std::min(lo, u);
    hi = std::max(hi, u);
  }
  // Standard error of the mean is sqrt(1/12/1e5) ~ 0.0009.
  EXPECT_NEAR(sum / kDraws, 0.5, 0.005);
  EXPECT_LT(lo, 0.001f);
  EXPECT_GT(hi, 0.999f);
}

TEST(PhiloxStreamTest, NextUniformUsesTopTwentyFourBits) {
  PhiloxStream a(5, RandomDomain::kShuffle, 1, 2);
  PhiloxStream b(5, RandomDomain::kShuffle, 1, 2);
  for (int i = 0; i < 100; ++i) {
    uint32_t word = a.NextU32();
    EXPECT_EQ(b.NextUniform(), static_cast<float>(word >> 8) / 16777216.0f);
  }
}

TEST(PhiloxStreamTest, NextBelowAlwaysBelowBound) {
  PhiloxStream stream(7, RandomDomain::kShuffle, 3, 4);
  for (uint32_t bound : {1u, 2u, 3u, 7u, 10u, 1000u, 0x80000001u, 0xffffffffu}) {
    for (int i = 0; i < 2000; ++i) {
      ASSERT_LT(stream.NextBelow(bound), bound) << "bound " << bound;
    }
  }
}

TEST(PhiloxStreamTest, NextBelowIsRoughlyUniform) {
  PhiloxStream stream(99, RandomDomain::kShuffle, 0, 0);
  constexpr uint32_t kBound = 7;
  constexpr int kDraws = 70000;
  std::vector<int> counts(kBound, 0);
  for (int i = 0; i < kDraws; ++i) ++counts[stream.NextBelow(kBound)];
  const double expected = static_cast<double>(kDraws) / kBound;
  double chi2 = 0;
  for (uint32_t v = 0; v < kBound; ++v) {
    EXPECT_GT(counts[v], 0) << "value " << v << " never drawn";
    chi2 += (counts[v] - expected) * (counts[v] - expected) / expected;
  }
  // 6 degrees of freedom: P(chi2 > 30) ~ 4e-5.
  EXPECT_LT(chi2, 30.0);
}

TEST(PhiloxStreamTest, NextBelowLargeBoundHitsUpperHalf) {
  // A biased "x % bound" or a truncated multiply would rarely reach the top.
  PhiloxStream stream(3, RandomDomain::kShuffle, 0, 0);
  const uint32_t bound = 3000000000u;
  int upper = 0;
  constexpr int kDraws = 20000;
  for (int i = 0; i < kDraws; ++i) upper += stream.NextBelow(bound) >= bound / 2 ? 1 : 0;
  EXPECT_NEAR(static_cast<double>(upper) / kDraws, 0.5, 0.02);
}

std::vector<uint32_t> Draw(PhiloxStream stream, int n) {
  std::vector<uint32_t> out;
  for (int i = 0; i < n; ++i) out.push_back(stream.NextU32());
  return out;
}

TEST(PhiloxStreamTest, SameParametersGiveSameSequence) {
  EXPECT_EQ(Draw(PhiloxStream(42, RandomDomain::kInit, 1, 2), 64),
            Draw(PhiloxStream(42, RandomDomain::kInit, 1, 2), 64));
}

TEST(PhiloxStreamTest, DifferentParametersGiveDifferentSequences) {
  const std::vector<uint32_t> base = Draw(PhiloxStream(42, RandomDomain::kInit, 1, 2), 64);
  EXPECT_NE(base, Draw(PhiloxStream(43, RandomDomain::kInit, 1, 2), 64));
  EXPECT_NE(base, Draw(PhiloxStream(42ULL | (1ULL << 32), RandomDomain::kInit, 1, 2), 64));
  EXPECT_NE(base, Draw(PhiloxStream(42, RandomDomain::kDropout, 1, 2), 64));
  EXPECT_NE(base, Draw(PhiloxStream(42, RandomDomain::kShuffle, 1, 2), 64));
  EXPECT_NE(base, Draw(PhiloxStream(42, RandomDomain::kInit, 2, 2), 64));
  EXPECT_NE(base, Draw(PhiloxStream(42, RandomDomain::kInit, 1, 3), 64));
  EXPECT_NE(base, Draw(PhiloxStream(42, RandomDomain::kInit, 2, 1), 64));
}

TEST(PhiloxStreamTest, NextBelowIsDeterministic) {
  PhiloxStream a(11, RandomDomain::kShuffle, 5, 0);
  PhiloxStream b(11, RandomDomain::kShuffle, 5, 0);
  for (int i = 0; i < 1000; ++i) {
    uint32_t bound = static_cast<uint32_t>(i) + 1;
    ASSERT_EQ(a.NextBelow(bound), b.NextBelow(bound));
  }
}

}  // namespace
}  // namespace holdfast
