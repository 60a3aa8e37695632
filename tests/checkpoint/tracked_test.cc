// Float arrays a program tracks by path beside the model and optimizer (an
// EMA of the weights, running statistics): saved 1/W per shard, restored
// bit for bit on any world size, and restore is strict about them: one line
// names every array missing, unused or of another size, and nothing changes.
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "checkpoint/manager.h"
#include "distribute/thread_communicator.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

// A trained model with an EMA of its weights and a small statistic, all
// derived from `seed`, tracked as "ema" and "stats/running_mean".
struct TrackedState {
  explicit TrackedState(uint64_t seed)
      : t(Trained(seed, 4)), checkpoint(t.model.get(), t.optimizer.get()) {
    const std::span<const float> params = std::as_const(*t.model).store().params();
    ema.assign(params.begin(), params.end());
    for (size_t i = 0; i < ema.size(); ++i)
      ema[i] = ema[i] * 0.9f + static_cast<float>(seed) * 1e-3f;
    for (size_t i = 0; i < running_mean.size(); ++i) running_mean[i] = std::sqrt(float(i + seed));
    checkpoint.Track("ema", ema);
    checkpoint.Track("stats/running_mean", running_mean);
  }
  Trainee t;
  std::vector<float> ema;
  std::vector<float> running_mean = std::vector<float>(7);
  Checkpoint checkpoint;
};

void SaveOn(int world, const std::string& dir, uint64_t seed) {
  RunInProcessRanks(world, [&](Communicator& comm) {
    TrackedState s(seed);
    CheckpointManager m(&s.checkpoint, &comm, {.directory = dir});
    ASSERT_OK(m.Save());
  });
}

class TrackedRoundTrip : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(TrackedRoundTrip, EveryTrackedArrayComesBackBitForBit) {
  const auto [saved_on, restored_on] = GetParam();
  TempDir dir;
  SaveOn(saved_on, dir.path(), 3);
  const TrackedState want(3);
  RunInProcessRanks(restored_on, [&](Communicator& comm) {
    TrackedState s(8);  // other values everywhere
    CheckpointManager m(&s.checkpoint, &comm, {.directory = dir.path()});
    auto restored = m.RestoreLatest();
    ASSERT_OK(restored);
    ASSERT_TRUE(restored->has_value());
    EXPECT_EQ(s.ema, want.ema);
    EXPECT_EQ(s.running_mean, want.running_mean);
    EXPECT_EQ(s.t.Params(), want.t.Params());
  });
}

INSTANTIATE_TEST_SUITE_P(Worlds, TrackedRoundTrip,
                         ::testing::Values(std::pair{1, 1}, std::pair{2, 2}, std::pair{3, 3},
                                           std::pair{3, 2}, std::pair{1, 3}));

TEST(TrackedStrictTest, MissingUnusedAndResizedArraysAreNamedInOneLineAndNothingChanges) {
  TempDir dir;
  SaveOn(1, dir.path(), 3);
  LocalCommunicator comm;

  // This run tracks "ema" at another size, not "stats/running_mean", and a
  // new "stats/count".
  Trainee t = Trained(8, 4);
  Checkpoint c(t.model.get(), t.optimizer.get());
  std::vector<float> ema(5, 1.0f), count(2, 2.0f);
  c.Track("ema", ema);
  c.Track("stats/count", count);
  const uint64_t before = t.Hash();
  CheckpointManager m(&c, &comm, {.directory = dir.path()});
  auto restored = m.RestoreLatest();
  ASSERT_FALSE(restored.ok());
  const Status& s = restored.status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_TRUE(RefusesTheRun(s));
  EXPECT_EQ(s.message().find('\n'), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("it has no stats/count"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("ema ("), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("float32[112] saved, float32[5] here"), std::string::npos)
      << s.message();
  EXPECT_NE(s.message().find("does not track: stats/running_mean"), std::string::npos)
      << s.message();
  EXPECT_EQ(t.Hash(), before);
  EXPECT_EQ(ema, std::vector<float>(5, 1.0f));
  EXPECT_EQ(count, std::vector<float>(2, 2.0f));
}

TEST(TrackedStrictTest, ACheckpointWithoutTheTrackedArraysIsRefusedToo) {
  TempDir dir;
  {
    LocalCommunicator comm;
    Trainee t = Trained(3, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    ASSERT_OK(m.Save());
  }
  LocalCommunicator comm;
  TrackedState s(8);
  const std::vector<float> ema = s.ema;
  CheckpointManager m(&s.checkpoint, &comm, {.directory = dir.path()});
  auto restored = m.RestoreLatest();
  ASSERT_FALSE(restored.ok());
  EXPECT_NE(restored.status().message().find("it has no ema, stats/running_mean"),
            std::string::npos)
      << restored.status().message();
  EXPECT_EQ(s.ema, ema);
}

TEST(TrackTest, PathsAreCheckedWhenTracked) {
  Trainee t = MakeClassifier(1);
  Checkpoint c(t.model.get(), t.optimizer.get());
  std::vector<float> v(3);
  c.Track("student/ema-0.999", v);
  EXPECT_THROW(c.Track("student/ema-0.999", v), std::invalid_argument);  // twice
  for (const char* bad : {"", "params", "optimizer/m", "model", "counters/x", "holdfast/y", "a//b",
                          "/a", "a/", "a/../b", "a b", "é"}) {
    SCOPED_TRACE(bad);
    EXPECT_THROW(c.Track(bad, v), std::invalid_argument);
  }
}

}  // namespace
}  // namespace holdfast
