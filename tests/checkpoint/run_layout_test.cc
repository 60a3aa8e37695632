// The rule for resuming a checkpoint written with another layout
// (checkpoint/run_layout.h): refuse what would change the result, warn about
// what cannot be bit-exact, stay quiet otherwise.
#include "checkpoint/run_layout.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

namespace holdfast {
namespace {

std::map<std::string, int64_t> Written(LayoutOptions layout, int threads) {
  std::map<std::string, int64_t> counters = {{"holdfast/epoch", 3}};
  RecordRunLayout(layout, threads, &counters);
  return counters;
}

const LayoutOptions kInvariant{};
const LayoutOptions kOff{.invariant = false};

TEST(RunLayoutTest, TheSameInvariantLayoutOnAnyThreadsAndWorldSizeIsSilent) {
  std::string warning = "stale";
  const Status s = CheckRunLayout(Written(kInvariant, 2), 3, kInvariant, 1, 2, &warning);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(warning, "");
}

TEST(RunLayoutTest, AnotherModeIsRefusedNamingBoth) {
  std::string warning;
  Status s = CheckRunLayout(Written(kInvariant, 2), 2, kOff, 2, 2, &warning);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("written with --layout-invariant on, this run has "
                             "--layout-invariant off: resuming would change the result"),
            std::string::npos)
      << s.message();
  s = CheckRunLayout(Written(kOff, 2), 2, kInvariant, 2, 2, &warning);
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message().find('\n'), std::string::npos) << "one line";
}

// A checkpoint of the invariant mode as it was before gathered rows (its
// gradients summed over micro-shards on a grid): resumable, not bit-exact.
TEST(RunLayoutTest, AMicroShardCheckpointIsAcceptedWithAWarning) {
  std::string warning;
  std::map<std::string, int64_t> counters = Written(kInvariant, 1);
  counters[kMicroShardsCounter] = 16;
  ASSERT_TRUE(CheckRunLayout(counters, 1, kInvariant, 1, 1, &warning).ok());
  EXPECT_EQ(warning,
            "written by an earlier holdfast that summed layout-invariant gradients over 16 "
            "micro-shards; this one gathers rows, so this resume cannot be bit-exact with the "
            "run that wrote it");
  EraseRunLayout(&counters);
  EXPECT_EQ(counters, (std::map<std::string, int64_t>{{"holdfast/epoch", 3}}));
}

TEST(RunLayoutTest, TheOptOutWarnsOnOtherThreadsOrWorldSizeOnly) {
  std::string warning;
  ASSERT_TRUE(CheckRunLayout(Written(kOff, 2), 2, kOff, 2, 2, &warning).ok());
  EXPECT_EQ(warning, "");
  ASSERT_TRUE(CheckRunLayout(Written(kOff, 2), 2, kOff, 1, 2, &warning).ok());
  EXPECT_EQ(warning,
            "written by 2 ranks x 2 threads, this run has 2 ranks x 1 thread: with "
            "--layout-invariant off the resumed run cannot be bit-exact");
  ASSERT_TRUE(CheckRunLayout(Written(kOff, 2), 3, kOff, 2, 2, &warning).ok());
  EXPECT_NE(warning.find("cannot be bit-exact"), std::string::npos);
}

TEST(RunLayoutTest, ACheckpointWithoutARecordIsAcceptedWithAWarning) {
  std::string warning;
  const std::map<std::string, int64_t> old = {{"holdfast/epoch", 3}};
  ASSERT_TRUE(CheckRunLayout(old, 2, kInvariant, 2, 2, &warning).ok());
  EXPECT_NE(warning.find("records no layout (written before holdfast recorded layouts"),
            std::string::npos);
}

TEST(RunLayoutTest, EraseLeavesTheUsersCounters) {
  std::map<std::string, int64_t> counters = Written(kInvariant, 2);
  EXPECT_EQ(counters.size(), 3u);
  EraseRunLayout(&counters);
  EXPECT_EQ(counters, (std::map<std::string, int64_t>{{"holdfast/epoch", 3}}));
}

}  // namespace
}  // namespace holdfast
