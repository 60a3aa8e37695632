// CheckpointManager over real files: save and restore bit-exactly, on the
// same and on other world sizes, fall back past damage, keep by policy.
#include "checkpoint/manager.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <mutex>

#include "distribute/thread_communicator.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;

TEST(CheckpointManagerTest, SaveThenRestoreIsBitExact) {
  TempDir dir;
  LocalCommunicator comm;
  Trainee a = Trained(1, 4);
  Checkpoint ca(a.model.get(), a.optimizer.get());
  ca.counters = {{"epoch", 3}, {"batch", 17}};
  ca.values = {{"loss_sum", 0.1 + 0.2}};  // not exactly representable in short decimal
  CheckpointManager ma(&ca, &comm, {.directory = dir.path()});
  ASSERT_OK(ma.Save());

  Trainee b = MakeClassifier(99);  // other initial values
  Checkpoint cb(b.model.get(), b.optimizer.get());
  CheckpointManager mb(&cb, &comm, {.directory = dir.path()});
  auto restored = mb.RestoreLatest();
  ASSERT_OK(restored);
  ASSERT_TRUE(restored->has_value());
  EXPECT_EQ(**restored, a.optimizer->iterations());
  EXPECT_EQ(b.optimizer->iterations(), a.optimizer->iterations());
  EXPECT_EQ(Flat(a), Flat(b));
  EXPECT_EQ(cb.counters, ca.counters);
  EXPECT_EQ(cb.values.at("loss_sum"), 0.1 + 0.2);
  EXPECT_TRUE(fs::exists(fs::path(dir.path()) /
                         ("ckpt-" + std::to_string(a.optimizer->iterations())) / "MANIFEST.json"));
  std::ifstream latest(fs::path(dir.path()) / "LATEST");
  std::string name;
  latest >> name;
  EXPECT_EQ(name, "ckpt-" + std::to_string(a.optimizer->iterations()));
}

TEST(CheckpointManagerTest, EmptyOrMissingDirectoryIsAFreshStart) {
  TempDir dir;
  LocalCommunicator comm;
  Trainee t = MakeClassifier(1);
  Checkpoint c(t.model.get(), t.optimizer.get());
  for (const std::string& d : {dir.path(), dir.File("not-yet")}) {
    CheckpointManager m(&c, &comm, {.directory = d});
    auto r = m.RestoreLatest();
    ASSERT_OK(r);
    EXPECT_FALSE(r->has_value());
  }
}

// Saved by `save_world` ranks, restored by `restore_world` ranks: every
// restoring rank gets the saved state (the blobs are re-sliced).
void SaveAndRestoreAcrossWorlds(int save_world, int restore_world, bool chief_writes_all) {
  TempDir dir;
  Trainee reference = Trained(5, 4);
  const std::vector<float> expected = Flat(reference);
  RunInProcessRanks(save_world, [&](Communicator& comm) {
    Trainee t = Trained(5, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    c.counters["rank_independent"] = 42;
    CheckpointManager m(&c, &comm, {.directory = dir.path(), .chief_writes_all = chief_writes_all});
    ASSERT_OK(m.Save());
  });
  const std::string step_dir =
      dir.path() + "/ckpt-" + std::to_string(reference.optimizer->iterations());
  int shards = 0;
  for (const auto& e : fs::directory_iterator(step_dir)) shards += e.path().extension() == ".bin";
  EXPECT_EQ(shards, chief_writes_all ? 1 : save_world);
  std::mutex mu;
  RunInProcessRanks(restore_world, [&](Communicator& comm) {
    Trainee t = MakeClassifier(100 + comm.rank());
    Checkpoint c(t.model.get(), t.optimizer.get());
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    auto r = m.RestoreLatest();
    std::lock_guard lock(mu);
    ASSERT_OK(r);
    EXPECT_EQ(Flat(t), expected) << "rank " << comm.rank();
    EXPECT_EQ(c.counters.at("rank_independent"), 42);
  });
}

TEST(CheckpointManagerTest, ThreeRanksSaveTwoRestore) { SaveAndRestoreAcrossWorlds(3, 2, false); }
TEST(CheckpointManagerTest, TwoRanksSaveFourRestore) { SaveAndRestoreAcrossWorlds(2, 4, false); }
TEST(CheckpointManagerTest, ChiefWritesAllForNoSharedFilesystem) {
  SaveAndRestoreAcrossWorlds(3, 3, true);
}

// Every kind of damage to the newest checkpoint's files is detected and the
// previous one restored; with both damaged, a DataLoss error.
TEST(CheckpointManagerTest, DamagedNewestFallsBackToPrevious) {
  for (const std::string victim : {"MANIFEST.json", "shard-0-of-1.bin"}) {
    for (bool truncate : {false, true}) {
      SCOPED_TRACE(victim + (truncate ? " truncated" : " byte flipped"));
      TempDir dir;
      LocalCommunicator comm;
      Trainee t = Trained(2, 4);
      Checkpoint c(t.model.get(), t.optimizer.get());
      CheckpointManager m(&c, &comm, {.directory = dir.path(), .max_to_keep = 2});
      ASSERT_OK(m.Save());
      const std::vector<float> previous = Flat(t);
      const int64_t previous_step = t.optimizer->iterations();
      t.optimizer->set_iterations(previous_step + 1);
      t.model->store().params()[0] += 1.0f;
      ASSERT_OK(m.Save());
      const fs::path file =
          fs::path(dir.path()) / ("ckpt-" + std::to_string(previous_step + 1)) / victim;
      const uint64_t size = fs::file_size(file);
      if (truncate) {
        fs::resize_file(file, size - 3);
      } else {
        FlipByte(file, size / 2);
      }
      Trainee fresh = MakeClassifier(7);
      Checkpoint cf(fresh.model.get(), fresh.optimizer.get());
      CheckpointManager mf(&cf, &comm, {.directory = dir.path()});
      auto r = mf.RestoreLatest();
      ASSERT_OK(r);
      EXPECT_EQ(**r, previous_step);
      EXPECT_EQ(Flat(fresh), previous);

      // Damage the previous one too: a clear error, not a fresh start.
      FlipByte(
          fs::path(dir.path()) / ("ckpt-" + std::to_string(previous_step)) / "shard-0-of-1.bin",
          100);
      auto none = mf.RestoreLatest();
      ASSERT_FALSE(none.ok());
      EXPECT_EQ(none.status().code(), StatusCode::kDataLoss) << none.status().ToString();
    }
  }
}

TEST(CheckpointManagerTest, AnotherModelIsAFailedPreconditionNamingIt) {
  TempDir dir;
  LocalCommunicator comm;
  Trainee t = Trained(2, 4);
  Checkpoint c(t.model.get(), t.optimizer.get());
  ASSERT_OK(CheckpointManager(&c, &comm, {.directory = dir.path()}).Save());
  Trainee other = MakeClassifier(2, /*dropout=*/false, /*adam=*/true, /*hidden=*/24);
  Checkpoint co(other.model.get(), other.optimizer.get());
  auto r = CheckpointManager(&co, &comm, {.directory = dir.path()}).RestoreLatest();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find("another model"), std::string::npos) << r.status().ToString();
}

TEST(CheckpointManagerTest, KeepsTheNewestAndRemovesStalePrepareAreas) {
  TempDir dir;
  LocalCommunicator comm;
  Trainee t = Trained(2, 4);
  Checkpoint c(t.model.get(), t.optimizer.get());
  CheckpointManager m(&c, &comm, {.directory = dir.path(), .max_to_keep = 2});
  for (int i = 0; i < 5; ++i) {
    t.optimizer->set_iterations(100 + i);
    ASSERT_OK(m.Save());
  }
  std::vector<int64_t> steps;
  for (const CheckpointInfo& info : m.Checkpoints()) steps.push_back(info.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{103, 104}));

  fs::create_directory(fs::path(dir.path()) / ".ckpt-105.tmp-deadbeef");
  std::ofstream(fs::path(dir.path()) / ".ckpt-105.tmp-deadbeef" / "shard-0-of-1.bin") << "partial";
  auto r = m.RestoreLatest();
  ASSERT_OK(r);
  EXPECT_EQ(**r, 104);
  EXPECT_FALSE(fs::exists(fs::path(dir.path()) / ".ckpt-105.tmp-deadbeef"));

  ASSERT_OK(m.DeleteAll());
  EXPECT_TRUE(m.Checkpoints().empty());
  EXPECT_FALSE(fs::exists(fs::path(dir.path()) / "LATEST"));
}

// checkpoint_interval (tf.train's): Save() commits only every N steps,
// counted from the start, from a restore or from the last commit; a forced
// save commits whatever the interval.
TEST(CheckpointManagerTest, CheckpointIntervalSkipsSavesThatComeTooSoon) {
  TempDir dir;
  LocalCommunicator comm;
  Trainee t = Trained(3, 4);
  Checkpoint c(t.model.get(), t.optimizer.get());
  CheckpointManager m(&c, &comm,
                      {.directory = dir.path(), .max_to_keep = 10, .checkpoint_interval = 5});
  t.optimizer->set_iterations(0);
  ASSERT_OK(m.RestoreOrInitialize());
  for (int step = 1; step <= 12; ++step) {
    t.optimizer->set_iterations(step);
    ASSERT_OK(m.Save());
  }
  t.optimizer->set_iterations(13);
  ASSERT_OK(m.Save(/*force=*/true));
  std::vector<int64_t> steps;
  for (const CheckpointInfo& info : m.Checkpoints()) steps.push_back(info.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{5, 10, 13}));

  // A restored manager counts from the restored step.
  CheckpointManager again(&c, &comm,
                          {.directory = dir.path(), .max_to_keep = 10, .checkpoint_interval = 5});
  auto r = again.RestoreLatest();
  ASSERT_OK(r);
  EXPECT_EQ(**r, 13);
  t.optimizer->set_iterations(17);
  ASSERT_OK(again.Save());
  EXPECT_EQ(again.Latest()->step, 13);
  t.optimizer->set_iterations(18);
  ASSERT_OK(again.Save());
  EXPECT_EQ(again.Latest()->step, 18);
  EXPECT_EQ(again.Latest()->path, (fs::path(dir.path()) / "ckpt-18").string());
}

// restore_or_initialize: the initializer runs on a fresh start only.
TEST(CheckpointManagerTest, RestoreOrInitializeRunsTheInitializerOnlyWhenNothingIsSaved) {
  TempDir dir;
  LocalCommunicator comm;
  Trainee t = Trained(4, 4);
  Checkpoint c(t.model.get(), t.optimizer.get());
  CheckpointManager m(&c, &comm, {.directory = dir.path()});
  int initialized = 0;
  auto fresh = m.RestoreOrInitialize([&] { ++initialized; });
  ASSERT_OK(fresh);
  EXPECT_FALSE(fresh->has_value());
  EXPECT_EQ(initialized, 1);
  EXPECT_FALSE(m.Latest().has_value());
  ASSERT_OK(m.Save());
  auto restored = m.RestoreOrInitialize([&] { ++initialized; });
  ASSERT_OK(restored);
  EXPECT_EQ(**restored, t.optimizer->iterations());
  EXPECT_EQ(initialized, 1);
}

// Directories named like checkpoints that no manifest commits (a removal cut
// short) are removed by the keep policy once older than every kept one;
// newer ones are left for RestoreLatest to judge.
TEST(CheckpointManagerTest, KeepPolicyRemovesUncommittedLeftovers) {
  TempDir dir;
  LocalCommunicator comm;
  Trainee t = Trained(5, 4);
  Checkpoint c(t.model.get(), t.optimizer.get());
  CheckpointManager m(&c, &comm, {.directory = dir.path(), .max_to_keep = 1});
  const fs::path root(dir.path());
  fs::create_directories(root / "ckpt-3");
  std::ofstream(root / "ckpt-3" / "shard-0-of-1.bin") << "half removed";
  fs::create_directories(root / "ckpt-50");
  t.optimizer->set_iterations(10);
  ASSERT_OK(m.Save());
  EXPECT_FALSE(fs::exists(root / "ckpt-3"));
  EXPECT_TRUE(fs::exists(root / "ckpt-50"));
  EXPECT_TRUE(fs::exists(root / "ckpt-10" / "MANIFEST.json"));
}

TEST(CheckpointManagerTest, ADirectoryUnderAFileIsRefusedOnEveryRankAtTheFirstCall) {
  TempDir dir;
  const std::string file_not_dir = dir.File("a-file");
  std::ofstream(file_not_dir) << "x";
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(2, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    CheckpointManager m(&c, &comm, {.directory = file_not_dir + "/ckpts"});
    const Status s = m.Save();
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
    EXPECT_NE(s.message().find("cannot keep checkpoints in " + file_not_dir + "/ckpts"),
              std::string::npos)
        << s.ToString();
    EXPECT_EQ(m.RestoreLatest().status().code(), StatusCode::kInvalidArgument);
  });
  EXPECT_EQ(ReadFileToString(file_not_dir), "x");
}

}  // namespace
}  // namespace holdfast
