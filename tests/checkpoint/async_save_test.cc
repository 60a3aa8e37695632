// Asynchronous saves on in-process ranks: the snapshot is the state of the
// save step whatever training does next; every rank learns the outcome at
// the same step from the control words alone; at most one save is in
// flight; the bytes on disk are those of a synchronous save; preemption
// (SaveAndWait) commits the current step after the one in flight.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "distribute/thread_communicator.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/fault_env.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::FaultInjectionEnv;

// The real Env, with every fsync of a file taking `delay` longer: a save
// that stays in flight for a while, as on a slow disk.
class SlowSyncEnv final : public EnvWrapper {
 public:
  explicit SlowSyncEnv(std::chrono::milliseconds delay)
      : EnvWrapper(Env::Default()), delay_(delay) {}
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    HOLDFAST_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base()->NewWritableFile(path));
    return std::unique_ptr<WritableFile>(new SlowFile(std::move(file), delay_));
  }

 private:
  class SlowFile final : public WritableFile {
   public:
    SlowFile(std::unique_ptr<WritableFile> file, std::chrono::milliseconds delay)
        : file_(std::move(file)), delay_(delay) {}
    Status Append(std::span<const char> data) override { return file_->Append(data); }
    Status Sync() override {
      std::this_thread::sleep_for(delay_);
      return file_->Sync();
    }
    Status Close() override { return file_->Close(); }

   private:
    std::unique_ptr<WritableFile> file_;
    std::chrono::milliseconds delay_;
  };

  std::chrono::milliseconds delay_;
};

class AsyncSaveTest : public ::testing::TestWithParam<int> {
 protected:
  int World() const { return GetParam(); }
};

// The live state changes right after Save() returns (training goes on); the
// checkpoint holds the state of the save step. Every rank sees the save
// resolve at the same agreed step.
TEST_P(AsyncSaveTest, CommitsTheSnapshotWhileTrainingGoesOn) {
  TempDir dir;
  SlowSyncEnv slow(std::chrono::milliseconds(30));
  std::vector<int64_t> resolved_at(static_cast<size_t>(World()), -1);
  std::vector<SaveStats> stats(static_cast<size_t>(World()));
  RunInProcessRanks(World(), [&](Communicator& comm) {
    LoadedState loaded(StateB());
    Trainee& t = loaded.trainee;
    Checkpoint& c = loaded.checkpoint;
    StepReplica replica(comm);
    CheckpointManager m(
        &c, &comm, {.directory = dir.path(), .env = &slow, .async = true, .replica = &replica});
    ASSERT_OK(m.Save());
    EXPECT_TRUE(m.save_in_flight());
    // Training moves on: new values everywhere, new counters, later steps.
    for (float& v : t.model->store().params()) v = -1.0f;
    for (auto& slot : t.optimizer->slots()) std::fill(slot.values.begin(), slot.values.end(), 7.0f);
    c.counters["saved_at"] = -5;
    for (int i = 0; i < 20000 && m.save_in_flight(); ++i) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      replica.Step();
      t.optimizer->set_iterations(t.optimizer->iterations() + 1);
      ASSERT_OK(m.Poll());
      if (!m.save_in_flight())
        resolved_at[static_cast<size_t>(comm.rank())] = replica.control().sequence;
    }
    EXPECT_FALSE(m.save_in_flight());
    EXPECT_EQ(m.last_committed_step(), StateB().step);
    stats[static_cast<size_t>(comm.rank())] = m.stats();
  });
  for (size_t r = 0; r < resolved_at.size(); ++r) {
    EXPECT_GT(resolved_at[r], 1) << "rank " << r << ": resolved before a step passed";
    EXPECT_EQ(resolved_at[r], resolved_at[0])
        << "rank " << r << " learnt the outcome at another step";
    EXPECT_EQ(stats[r].started, 1);
    EXPECT_EQ(stats[r].committed, 1);
    EXPECT_EQ(stats[r].waits, 0);
  }
  const Restored r = RestoreFresh(dir.path());
  ASSERT_OK(r.status);
  ASSERT_TRUE(r.state.has_value());
  EXPECT_EQ(Which(*r.state, StateA(), StateB()), "new");
  EXPECT_EQ(PrepareAreas(dir.path()), std::vector<std::string>{});
  // The writers' votes are not part of the checkpoint.
  for (const auto& e :
       fs::directory_iterator(fs::path(dir.path()) / ("ckpt-" + std::to_string(StateB().step)))) {
    EXPECT_EQ(e.path().filename().string().find(".vote"), std::string::npos) << e.path();
  }
}

// The same state saved synchronously and asynchronously: the same shard
// files, byte for byte.
TEST_P(AsyncSaveTest, WritesTheSameBytesAsASynchronousSave) {
  TempDir sync_dir, async_dir;
  for (const Status& s : SaveOnRanks({.world = World()}, sync_dir.path(), Env::Default(), StateB()))
    ASSERT_OK(s);
  for (const Status& s :
       SaveOnRanks({.world = World(), .async = true}, async_dir.path(), Env::Default(), StateB()))
    ASSERT_OK(s);
  const std::string name = "ckpt-" + std::to_string(StateB().step);
  int shards = 0;
  for (const auto& e : fs::directory_iterator(fs::path(sync_dir.path()) / name)) {
    const std::string file = e.path().filename().string();
    if (!file.ends_with(".bin")) continue;
    ++shards;
    EXPECT_EQ(ReadFileToString(e.path().string()),
              ReadFileToString((fs::path(async_dir.path()) / name / file).string()))
        << file;
  }
  EXPECT_EQ(shards, World());
  auto a = ReadManifest(Env::Default(), (fs::path(sync_dir.path()) / name).string());
  auto b = ReadManifest(Env::Default(), (fs::path(async_dir.path()) / name).string());
  ASSERT_OK(a.status());
  ASSERT_OK(b.status());
  EXPECT_EQ(a->counters, b->counters);
  ASSERT_EQ(a->shards.size(), b->shards.size());
  for (size_t i = 0; i < a->shards.size(); ++i) EXPECT_EQ(a->shards[i].xxh3, b->shards[i].xxh3);
}

// A save that falls due while the previous one is still writing waits for it
// (counted), then begins; preemption's SaveAndWait commits the current step
// after the one in flight. Every save ends committed.
TEST_P(AsyncSaveTest, AtMostOneInFlightAndSaveAndWaitCommitsTheCurrentStep) {
  TempDir dir;
  SlowSyncEnv slow(std::chrono::milliseconds(40));
  std::vector<SaveStats> stats(static_cast<size_t>(World()));
  RunInProcessRanks(World(), [&](Communicator& comm) {
    LoadedState loaded(StateB());
    Trainee& t = loaded.trainee;
    Checkpoint& c = loaded.checkpoint;
    StepReplica replica(comm);
    CheckpointManager m(&c, &comm,
                        {.directory = dir.path(),
                         .max_to_keep = 3,
                         .env = &slow,
                         .async = true,
                         .replica = &replica});
    const int64_t s = StateB().step;
    ASSERT_OK(m.Save());  // step s, in flight for > 40 ms
    replica.Step();
    t.optimizer->set_iterations(s + 1);
    ASSERT_OK(m.Save());  // still in flight: waits, then begins s + 1
    EXPECT_EQ(m.last_committed_step(), s);
    EXPECT_TRUE(m.save_in_flight());
    replica.Step();
    t.optimizer->set_iterations(s + 2);
    for (float& v : t.model->store().params()) v = 0.5f;
    ASSERT_OK(m.SaveAndWait());  // preemption at s + 2
    EXPECT_FALSE(m.save_in_flight());
    EXPECT_EQ(m.last_committed_step(), s + 2);
    stats[static_cast<size_t>(comm.rank())] = m.stats();
  });
  for (const SaveStats& st : stats) {
    EXPECT_EQ(st.waits, 1);
    EXPECT_GT(st.wait_seconds, 0.0);
    EXPECT_EQ(st.started, 3);
    EXPECT_EQ(st.committed, 3);
    EXPECT_EQ(st.failed, 0);
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  const int64_t s = StateB().step;
  std::vector<std::string> expected = {"LATEST", "LOCK", "ckpt-" + std::to_string(s),
                                       "ckpt-" + std::to_string(s + 1),
                                       "ckpt-" + std::to_string(s + 2)};
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(names, expected);
  const Restored r = RestoreFresh(dir.path());
  ASSERT_OK(r.status);
  ASSERT_TRUE(r.state.has_value());
  EXPECT_EQ(r.state->step, s + 2);
  EXPECT_EQ(r.state->flat[0], 0.5f);
}

// A failed shard on one rank: every rank gets Aborted at the same step, the
// previous checkpoint stays, nothing is left behind, and the next save
// (space back) commits.
TEST_P(AsyncSaveTest, AFailedShardAbortsEverywhereAtOneStep) {
  TempDir dir;
  for (const Status& s : SaveOnRanks({.world = World()}, dir.path(), Env::Default(), StateA()))
    ASSERT_OK(s);
  FaultInjectionEnv env(Env::Default());
  std::vector<Status> first(static_cast<size_t>(World())), second = first;
  std::vector<int64_t> resolved_at(static_cast<size_t>(World()), -1);
  RunInProcessRanks(World(), [&](Communicator& comm) {
    LoadedState loaded(StateB());
    Checkpoint& c = loaded.checkpoint;
    StepReplica replica(comm);
    CheckpointManager m(&c, &comm,
                        {.directory = dir.path(), .env = &env, .async = true, .replica = &replica});
    if (comm.rank() == 0) env.FailFrom(0, ENOSPC, FaultInjectionEnv::kDiskFullOps);
    comm.Barrier();
    first[static_cast<size_t>(comm.rank())] =
        StepUntilResolved(m, replica, m.Save(), &resolved_at[static_cast<size_t>(comm.rank())]);
    comm.Barrier();
    if (comm.rank() == 0) env.ClearFaults();
    comm.Barrier();
    second[static_cast<size_t>(comm.rank())] =
        StepUntilResolved(m, replica, m.Save(/*force=*/true));
  });
  for (size_t r = 0; r < first.size(); ++r) {
    EXPECT_EQ(first[r].code(), StatusCode::kAborted) << "rank " << r << ": " << first[r].ToString();
    EXPECT_GT(resolved_at[r], 0) << "rank " << r << ": never resolved by a step";
    EXPECT_EQ(resolved_at[r], resolved_at[0]) << "rank " << r;
    EXPECT_OK(second[r]);
  }
  EXPECT_NE(first[0].message().find("No space left"), std::string::npos) << first[0].ToString();
  const Restored r = RestoreFresh(dir.path());
  ASSERT_OK(r.status);
  ASSERT_TRUE(r.state.has_value());
  EXPECT_EQ(Which(*r.state, StateA(), StateB()), "new");
}

// A manager destroyed with a save in flight (an exception ends training):
// its writer finishes without the commit, the previous checkpoint stays and
// recovery removes the prepare area.
TEST_P(AsyncSaveTest, DestroyedWithASaveInFlightLeavesThePreviousCheckpoint) {
  TempDir dir;
  for (const Status& s : SaveOnRanks({.world = World()}, dir.path(), Env::Default(), StateA()))
    ASSERT_OK(s);
  SlowSyncEnv slow(std::chrono::milliseconds(20));
  RunInProcessRanks(World(), [&](Communicator& comm) {
    LoadedState loaded(StateB());
    StepReplica replica(comm);
    CheckpointManager m(
        &loaded.checkpoint, &comm,
        {.directory = dir.path(), .env = &slow, .async = true, .replica = &replica});
    ASSERT_OK(m.Save());
  });
  EXPECT_EQ(PrepareAreas(dir.path()).size(), 1u);
  const Restored r = RestoreFresh(dir.path());
  ASSERT_OK(r.status);
  ASSERT_TRUE(r.state.has_value());
  EXPECT_EQ(Which(*r.state, StateA(), StateB()), "old");
  EXPECT_EQ(PrepareAreas(dir.path()), std::vector<std::string>{});
}

// Minor page faults so far, each a fresh page touched: of the calling thread
// (RUSAGE_THREAD) or of the whole process (RUSAGE_SELF).
int64_t FreshPagesTouched(int who) {
  rusage usage{};
  getrusage(who, &usage);
  return usage.ru_minflt;
}

// Pages of snapshot each rank of `world` holds for the big classifier below.
size_t SnapshotPagesPerRank(int world) {
  Trainee probe = MakeClassifier(1, false, true, /*hidden=*/1 << 19);
  return Flat(probe).size() * sizeof(float) / static_cast<size_t>(world) / kDirectIoAlignment;
}

// Between saves the writer thread faults in the snapshot's memory: the copy
// on the training thread touches no fresh page, not even the first save's
// (a fault per page made that copy several times as slow as the later ones).
TEST_P(AsyncSaveTest, TheSnapshotTouchesNoFreshMemory) {
  TempDir dir;
  const size_t snapshot_pages = SnapshotPagesPerRank(World());
  std::vector<int64_t> fresh(static_cast<size_t>(World()), -1);
  RunInProcessRanks(World(), [&](Communicator& comm) {
    Trainee t = MakeClassifier(1, false, true, /*hidden=*/1 << 19);
    Checkpoint c(t.model.get(), t.optimizer.get());
    StepReplica replica(comm);
    CheckpointManager m(&c, &comm, {.directory = dir.path(), .async = true, .replica = &replica});
    replica.Step();
    ASSERT_OK(m.Poll());  // a step without a save: the writer reserves the snapshot
    const int64_t before = FreshPagesTouched(RUSAGE_THREAD);
    ASSERT_OK(m.Save());
    fresh[static_cast<size_t>(comm.rank())] = FreshPagesTouched(RUSAGE_THREAD) - before;
    ASSERT_OK(m.WaitForSave());
    EXPECT_EQ(m.stats().committed, 1);
  });
  ASSERT_GT(snapshot_pages, 1000u);
  for (size_t r = 0; r < fresh.size(); ++r) {
    EXPECT_GE(fresh[r], 0);
    EXPECT_LT(fresh[r], static_cast<int64_t>(snapshot_pages / 20))
        << "rank " << r << " faulted in snapshot memory itself (" << snapshot_pages
        << " pages of snapshot)";
  }
}

// PrepareAsyncSave has the snapshot's memory faulted in before it returns, so
// that no thread does it while training runs: the first save after it
// touches almost no fresh page in the whole process (without it, that save's
// own Poll has the writer fault in every page of the snapshot meanwhile).
TEST_P(AsyncSaveTest, PrepareAsyncSaveFaultsTheSnapshotInBeforeItReturns) {
  TempDir dir;
  const size_t snapshot_pages = SnapshotPagesPerRank(World()) * static_cast<size_t>(World());
  int64_t before = 0, after = 0;
  RunInProcessRanks(World(), [&](Communicator& comm) {
    Trainee t = MakeClassifier(1, false, true, /*hidden=*/1 << 19);
    Checkpoint c(t.model.get(), t.optimizer.get());
    StepReplica replica(comm);
    CheckpointManager m(&c, &comm, {.directory = dir.path(), .async = true, .replica = &replica});
    m.PrepareAsyncSave();
    replica.Step();
    comm.Barrier();
    if (comm.rank() == 0) before = FreshPagesTouched(RUSAGE_SELF);
    comm.Barrier();
    ASSERT_OK(m.Save());
    comm.Barrier();
    if (comm.rank() == 0) after = FreshPagesTouched(RUSAGE_SELF);
    comm.Barrier();
    ASSERT_OK(m.WaitForSave());
    EXPECT_EQ(m.stats().committed, 1);
  });
  ASSERT_GT(snapshot_pages, 1000u);
  EXPECT_LT(after - before, static_cast<int64_t>(snapshot_pages / 20))
      << "the process faulted in snapshot memory during the first save (" << snapshot_pages
      << " pages of snapshot in all)";
}

INSTANTIATE_TEST_SUITE_P(Worlds, AsyncSaveTest, ::testing::Values(1, 2, 3),
                         [](const auto& info) { return "W" + std::to_string(info.param); });

}  // namespace
}  // namespace holdfast
