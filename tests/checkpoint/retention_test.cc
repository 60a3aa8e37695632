// The keep policy as a pure function of creation times (an injected clock),
// and wired into CheckpointManager.
#include "checkpoint/retention.h"

#include <gtest/gtest.h>

#include "checkpoint/manager.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

constexpr double kHour = 3600;

TEST(RetentionTest, KeepsTheNewestMaxToKeep) {
  const std::vector<double> t = {10, 20, 30, 40, 50};
  EXPECT_EQ(CheckpointsToRemove(t, 2, 0), (std::vector<size_t>{0, 1, 2}));
  EXPECT_EQ(CheckpointsToRemove(t, 1, 0), (std::vector<size_t>{0, 1, 2, 3}));
  EXPECT_TRUE(CheckpointsToRemove(t, 5, 0).empty());
  EXPECT_TRUE(CheckpointsToRemove(t, 9, 0).empty());
  EXPECT_TRUE(CheckpointsToRemove({}, 1, 0).empty());
}

// Windows of one hour from the oldest checkpoint: each window's oldest
// stays for good; the newest two stay anyway.
TEST(RetentionTest, KeepsTheOldestOfEveryWindow) {
  const std::vector<double> t = {0,           0.5 * kHour, 1.2 * kHour, 1.5 * kHour,
                                 2.1 * kHour, 2.2 * kHour, 3.0 * kHour};
  EXPECT_EQ(CheckpointsToRemove(t, 2, 1.0), (std::vector<size_t>{1, 3}));
  // Two-hour windows: only 0 h and 2.1 h are window keepers among the older five.
  EXPECT_EQ(CheckpointsToRemove(t, 2, 2.0), (std::vector<size_t>{1, 2, 3}));
}

// A save every 20 minutes for 5 hours, the policy applied after each one
// as CheckpointManager does: what survives is the oldest checkpoint of every
// hour plus the newest two, and a keeper, once kept, is never removed later.
TEST(RetentionTest, AppliedAfterEverySaveKeepsOnePerHourForGood) {
  std::vector<double> kept;
  std::vector<double> keepers_seen;
  for (int save = 0; save <= 15; ++save) {
    kept.push_back(save * kHour / 3);
    const std::vector<size_t> remove = CheckpointsToRemove(kept, 2, 1.0);
    for (auto it = remove.rbegin(); it != remove.rend(); ++it) {
      for (double k : keepers_seen) EXPECT_NE(kept[*it], k) << "a keeper was removed";
      kept.erase(kept.begin() + static_cast<std::ptrdiff_t>(*it));
    }
    if (kept.size() > 2) keepers_seen.assign(kept.begin(), kept.end() - 2);
  }
  EXPECT_EQ(kept, (std::vector<double>{0, 1 * kHour, 2 * kHour, 3 * kHour, 4 * kHour,
                                       14 * kHour / 3, 5 * kHour}));
}

// Through the manager: with windows far shorter than the time between two
// saves every checkpoint is its window's oldest and stays; without, only
// max_to_keep stay.
TEST(RetentionTest, TheManagerAppliesKeepEveryNHours) {
  for (double hours : {0.0, 1e-9}) {
    SCOPED_TRACE("keep_every_n_hours " + std::to_string(hours));
    TempDir dir;
    LocalCommunicator comm;
    Trainee t = Trained(1, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    CheckpointManager m(&c, &comm,
                        {.directory = dir.path(), .max_to_keep = 2, .keep_every_n_hours = hours});
    for (int i = 0; i < 5; ++i) {
      t.optimizer->set_iterations(100 + i);
      ASSERT_OK(m.Save());
    }
    EXPECT_EQ(m.Checkpoints().size(), hours > 0 ? 5u : 2u);
  }
}

}  // namespace
}  // namespace holdfast
