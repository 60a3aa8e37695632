// CheckpointManager::Save under a crash, an I/O error or a full disk at every
// one of its Env operations, on 1 and 3 in-process ranks sharing one
// FaultInjectionEnv: afterwards a fresh process restores the old or the new
// checkpoint, never a mix, never none when one existed.
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/manager.h"
#include "distribute/thread_communicator.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/fault_env.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::FaultInjectionEnv;

// Env::Default() without fsync. What survives a power cut is decided by
// FaultInjectionEnv's model, so real fsyncs would only cost time (hundreds of
// saves on ext4).
class NoSyncEnv final : public EnvWrapper {
 public:
  NoSyncEnv() : EnvWrapper(Env::Default()) {}
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    HOLDFAST_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> f, base()->NewWritableFile(path));
    return std::unique_ptr<WritableFile>(new File(std::move(f)));
  }
  Status SyncDir(const std::string&) override { return Status::Ok(); }

 private:
  class File final : public WritableFile {
   public:
    explicit File(std::unique_ptr<WritableFile> base) : base_(std::move(base)) {}
    Status Append(std::span<const char> data) override { return base_->Append(data); }
    Status Sync() override { return Status::Ok(); }
    Status Close() override { return base_->Close(); }

   private:
    std::unique_ptr<WritableFile> base_;
  };
};

NoSyncEnv* FastDisk() {
  static NoSyncEnv env;
  return &env;
}

// Aborts the process with a message when a case runs longer than `seconds`:
// a rank hanging in a collective shows up as a named failure, not as a
// CTest timeout.
class Watchdog {
 public:
  Watchdog(std::string what, int seconds) : what_(std::move(what)) {
    thread_ = std::thread([this, seconds] {
      std::unique_lock lock(mu_);
      if (!cv_.wait_for(lock, std::chrono::seconds(seconds), [this] { return done_; })) {
        std::fprintf(stderr, "HANG: %s did not return within %d s\n", what_.c_str(), seconds);
        std::abort();
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }

 private:
  std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

// Every rank learns the same outcome: the same status from a synchronous
// save; from an asynchronous one the same code (the reason of a failure is
// the chief's to tell, since the others learn it from a control word).
bool AllEqual(const std::vector<Status>& statuses, bool async = false) {
  for (const Status& s : statuses) {
    if (s.code() != statuses[0].code()) return false;
    if (!async && s.message() != statuses[0].message()) return false;
  }
  return true;
}

std::string Describe(const std::vector<Status>& statuses) {
  std::string out;
  for (size_t r = 0; r < statuses.size(); ++r) {
    out += "\n  rank " + std::to_string(r) + ": " + statuses[r].ToString();
  }
  return out;
}

// kKill: the process dies at the operation, the machine stays up (every
// write made so far survives). kCrash: it dies there and the power goes too
// (PowerCut drops what was not durable).
enum class Fault { kKill, kCrash, kEio, kEnospc };

const char* FaultName(Fault f) {
  switch (f) {
    case Fault::kKill:
      return "CrashAt";
    case Fault::kCrash:
      return "CrashAt+PowerCut";
    case Fault::kEio:
      return "FailAt(EIO)";
    case Fault::kEnospc:
      return "FailAt(ENOSPC)";
  }
  return "?";
}

class CrashSweepTest : public ::testing::TestWithParam<std::tuple<int, bool, bool>> {
 protected:
  SaveSetup Setup() const {
    return {.world = std::get<0>(GetParam()),
            .chief_writes_all = std::get<1>(GetParam()),
            .async = std::get<2>(GetParam())};
  }

  // A directory holding only the committed checkpoint A (and LATEST).
  void SetUp() override {
    template_dir_ = fs::path(base_.path()) / "template";
    fs::create_directory(template_dir_);
    for (const Status& s : SaveOnRanks(Setup(), template_dir_.string(), FastDisk(), StateA()))
      ASSERT_OK(s);
  }

  // A fresh copy of the template.
  std::string FreshDir() {
    const fs::path d = fs::path(base_.path()) / ("case-" + std::to_string(cases_++));
    CopyTree(template_dir_, d);
    return d.string();
  }

  // Env operations of a clean save of B over A.
  int64_t CountOps() {
    const std::string dir = FreshDir();
    FaultInjectionEnv env(FastDisk());
    const int64_t before = env.operations();
    for (const Status& s : SaveOnRanks(Setup(), dir, &env, StateB())) EXPECT_OK(s);
    const int64_t count = env.operations() - before;
    const Restored r = RestoreFresh(dir);
    EXPECT_OK(r.status);
    EXPECT_TRUE(r.state.has_value());
    if (r.state) {
      EXPECT_EQ(Which(*r.state, StateA(), StateB()), "new");
    }
    fs::remove_all(dir);
    return count;
  }

  TempDir base_;
  fs::path template_dir_;
  int cases_ = 0;
};

// The sweep. With 3 ranks the shard writes interleave in any order, but their
// number is fixed and the commit phase runs on the chief alone after the
// gather, so the outcome is predicted exactly from the operation that was
// hit, for every world size:
//  - the commit point is the Rename of the prepare area onto ckpt-<step>; it
//    is durable after the SyncDir of the checkpoint directory that follows;
//  - a failure (one-shot) at or before the Rename: Aborted on every rank, A;
//    after it: B (Save may still say Aborted if the SyncDir itself failed);
//  - a kill (no power cut) at or before the Rename: A; after it: B;
//  - a crash with a power cut at or before that SyncDir: A; after it: B.
// A Save that returned OK must survive the power cut.
TEST_P(CrashSweepTest, OldOrNewAtEveryOperation) {
  const SaveSetup setup = Setup();
  const int64_t count = CountOps();
  ASSERT_GT(count, 10);
  const std::string sb = "ckpt-" + std::to_string(StateB().step);
  for (Fault fault : {Fault::kKill, Fault::kCrash, Fault::kEio, Fault::kEnospc}) {
    int64_t commit_k = -1;   // the k whose fault hit the commit Rename
    int64_t durable_k = -1;  // the k whose fault hit the SyncDir after it
    int old_outcomes = 0, new_outcomes = 0;
    int leftovers = 0;  // cases that left a prepare area for recovery to remove
    for (int64_t k = 0; k <= count; ++k) {
      SCOPED_TRACE(std::string(FaultName(fault)) + " at operation " + std::to_string(k) + " of " +
                   std::to_string(count));
      const std::string dir = FreshDir();
      std::vector<Status> statuses;
      std::string hit;
      {
        FaultInjectionEnv env(FastDisk());
        if (fault == Fault::kCrash || fault == Fault::kKill) {
          env.CrashAt(k);
        } else {
          env.FailAt(k, fault == Fault::kEio ? EIO : ENOSPC);
        }
        {
          Watchdog watchdog(std::string(FaultName(fault)) + " at " + std::to_string(k), 30);
          statuses = SaveOnRanks(setup, dir, &env, StateB());
        }
        hit = env.last_fault();
        if (k == count) {
          EXPECT_EQ(env.faults_injected(), 0) << "the sweep should end past the last operation";
        } else {
          EXPECT_EQ(env.faults_injected(), 1) << "operation " << k << " was never reached";
        }
        if (fault == Fault::kCrash) ASSERT_OK(env.PowerCut());
      }
      SCOPED_TRACE("fault hit: " + hit + Describe(statuses));
      if (hit.rfind("Rename ", 0) == 0 && hit.ends_with("/" + sb)) commit_k = k;
      if (commit_k >= 0 && commit_k < k && durable_k < 0 && hit == "SyncDir " + dir) durable_k = k;

      // Every rank learns the same outcome.
      EXPECT_TRUE(AllEqual(statuses, setup.async));
      if (fault == Fault::kEio || fault == Fault::kEnospc) {
        if (!statuses[0].ok()) {
          EXPECT_EQ(statuses[0].code(), StatusCode::kAborted);
          if (commit_k < 0 || commit_k == k) {
            EXPECT_NE(statuses[0].message().find("not"), std::string::npos)
                << "an aborted save should say what was not done";
          }
        }
        // A failed save cleans up after itself.
        EXPECT_EQ(PrepareAreas(dir), std::vector<std::string>{});
      }

      if (!PrepareAreas(dir).empty()) ++leftovers;
      const Restored r = RestoreFresh(dir);
      ASSERT_OK(r.status);
      ASSERT_TRUE(r.state.has_value());
      const std::string which = Which(*r.state, StateA(), StateB());
      ASSERT_NE(which.substr(0, 7), "neither");
      (which == "old" ? old_outcomes : new_outcomes)++;
      if (statuses[0].ok()) {
        EXPECT_EQ(which, "new") << "Save returned OK, then lost B";
      }

      std::string expected;
      if (fault == Fault::kCrash) {
        expected = durable_k >= 0 && k > durable_k ? "new" : "old";
      } else if (fault == Fault::kKill) {
        expected = commit_k >= 0 && k > commit_k ? "new" : "old";
      } else {
        expected = statuses[0].ok() || (commit_k >= 0 && k > commit_k) ? "new" : "old";
      }
      EXPECT_EQ(which, expected);
      // A crash may leave a prepare area; recovery removes it.
      EXPECT_EQ(PrepareAreas(dir), std::vector<std::string>{});
      fs::remove_all(dir);
    }
    std::printf(
        "%s: %lld operations, commit rename at %lld, durable after %lld; old %d, new %d, "
        "prepare areas left %d\n",
        FaultName(fault), static_cast<long long>(count), static_cast<long long>(commit_k),
        static_cast<long long>(durable_k), old_outcomes, new_outcomes, leftovers);
    // The sweep really went through the commit.
    EXPECT_GE(commit_k, 0) << FaultName(fault) << " never hit the commit Rename";
    if (fault == Fault::kCrash) {
      EXPECT_GT(durable_k, commit_k);
    }
    EXPECT_GT(old_outcomes, 0);
    EXPECT_GT(new_outcomes, 0);
    if (fault == Fault::kKill) {
      EXPECT_GT(leftovers, 0) << "no kill left a prepare area: its removal went untested";
    }
  }
}

// A full disk ("from now on") anywhere in a save: Aborted on every rank with
// the reason, A stays; once space is back the next save goes through.
TEST_P(CrashSweepTest, DiskFullAbortsEverywhereThenTrainingGoesOn) {
  const SaveSetup setup = Setup();
  const int64_t count = CountOps();
  int aborted = 0;
  for (int64_t k = 0; k <= count; ++k) {
    SCOPED_TRACE("disk full from operation " + std::to_string(k) + " of " + std::to_string(count));
    const std::string dir = FreshDir();
    FaultInjectionEnv env(FastDisk());
    env.FailFrom(k, ENOSPC, FaultInjectionEnv::kDiskFullOps);
    std::vector<Status> first(static_cast<size_t>(setup.world)), second = first;
    std::optional<Restored> between;
    Watchdog watchdog("disk full from " + std::to_string(k), 30);
    RunInProcessRanks(setup.world, [&](Communicator& comm) {
      LoadedState loaded(StateB());
      Checkpoint& c = loaded.checkpoint;
      StepReplica replica(comm);
      CheckpointManager m(&c, &comm,
                          {.directory = dir,
                           .max_to_keep = setup.max_to_keep,
                           .chief_writes_all = setup.chief_writes_all,
                           .env = &env,
                           .async = setup.async,
                           .replica = &replica});
      auto save = [&] {
        const Status s = m.Save();
        return setup.async ? StepUntilResolved(m, replica, s) : s;
      };
      first[static_cast<size_t>(comm.rank())] = save();
      comm.Barrier();
      if (comm.rank() == 0) {
        between = RestoreFresh(dir);
        env.ClearFaults();  // space is back
      }
      comm.Barrier();
      second[static_cast<size_t>(comm.rank())] = save();
    });
    SCOPED_TRACE("first save:" + Describe(first));
    EXPECT_TRUE(AllEqual(first, setup.async));
    ASSERT_OK(between->status);
    ASSERT_TRUE(between->state.has_value());
    const std::string which = Which(*between->state, StateA(), StateB());
    if (!first[0].ok()) {
      ++aborted;
      EXPECT_EQ(first[0].code(), StatusCode::kAborted);
      // The chief names the full disk, or (async) the rank that could not
      // even report, which says why on its stderr.
      EXPECT_TRUE(first[0].message().find("No space left") != std::string::npos ||
                  (setup.async && first[0].message().find("left no vote") != std::string::npos))
          << first[0].ToString();
      EXPECT_EQ(which, "old");
      EXPECT_EQ(PrepareAreas(dir), std::vector<std::string>{});
    } else {
      EXPECT_EQ(which, "new");
    }
    for (const Status& s : second) EXPECT_OK(s);
    const Restored after = RestoreFresh(dir);
    ASSERT_OK(after.status);
    ASSERT_TRUE(after.state.has_value());
    EXPECT_EQ(Which(*after.state, StateA(), StateB()), "new");
    fs::remove_all(dir);
  }
  EXPECT_GT(aborted, 0);
}

INSTANTIATE_TEST_SUITE_P(Worlds, CrashSweepTest,
                         ::testing::Combine(::testing::Values(1, 3), ::testing::Bool(),
                                            ::testing::Bool()),
                         [](const auto& info) {
                           return "W" + std::to_string(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_ChiefWritesAll" : "_Sharded") +
                                  (std::get<2>(info.param) ? "_Async" : "_Sync");
                         });

// max_to_keep = 1: saving C deletes B. A crash anywhere, the deletion
// included, leaves B or C restorable.
TEST(CrashSweepKeepPolicyTest, CrashWhileDeletingTheOldCheckpoint) {
  for (int world : {1, 3}) {
    SCOPED_TRACE("world " + std::to_string(world));
    const SaveSetup setup{.world = world, .chief_writes_all = false, .max_to_keep = 1};
    TempDir base;
    const fs::path tmpl = fs::path(base.path()) / "template";
    fs::create_directory(tmpl);
    for (const State* s : {&StateA(), &StateB()}) {
      for (const Status& st : SaveOnRanks(setup, tmpl.string(), FastDisk(), *s)) ASSERT_OK(st);
    }
    ASSERT_FALSE(fs::exists(tmpl / ("ckpt-" + std::to_string(StateA().step))));

    int64_t count = 0;
    {
      const fs::path d = fs::path(base.path()) / "count";
      CopyTree(tmpl, d);
      FaultInjectionEnv env(FastDisk());
      for (const Status& st : SaveOnRanks(setup, d.string(), &env, StateC())) ASSERT_OK(st);
      count = env.operations();
      EXPECT_FALSE(fs::exists(d / ("ckpt-" + std::to_string(StateB().step))));
    }
    const std::string sb = "ckpt-" + std::to_string(StateB().step);
    int deletion_hits = 0;
    for (int64_t k = 0; k <= count; ++k) {
      const fs::path d = fs::path(base.path()) / ("case-" + std::to_string(k));
      CopyTree(tmpl, d);
      std::string hit;
      {
        FaultInjectionEnv env(FastDisk());
        env.CrashAt(k);
        Watchdog watchdog("keep policy crash at " + std::to_string(k), 30);
        (void)SaveOnRanks(setup, d.string(), &env, StateC());
        hit = env.last_fault();
        ASSERT_OK(env.PowerCut());
      }
      SCOPED_TRACE("crash at operation " + std::to_string(k) + ": " + hit);
      if ((hit.rfind("RemoveFile ", 0) == 0 || hit.rfind("RemoveDir ", 0) == 0) &&
          hit.find("/" + sb) != std::string::npos) {
        ++deletion_hits;
      }
      const Restored r = RestoreFresh(d.string());
      ASSERT_OK(r.status);
      ASSERT_TRUE(r.state.has_value());
      const std::string which = Which(*r.state, StateB(), StateC());
      EXPECT_TRUE(which == "old" || which == "new") << which;
      fs::remove_all(d);
    }
    EXPECT_GE(deletion_hits, 2) << "the sweep never crashed inside the deletion of " << sb;
  }
}

// A save whose commit rename happened but whose directory fsync failed says
// Aborted ("may not be durable"). Retrying the save must make it durable
// before it says OK: after a power cut, B must be there.
TEST(CrashSweepRetryTest, RetryAfterFailedDirectorySyncIsDurable) {
  TempDir base;
  const SaveSetup setup{};
  const fs::path tmpl = fs::path(base.path()) / "template";
  fs::create_directory(tmpl);
  for (const Status& s : SaveOnRanks(setup, tmpl.string(), FastDisk(), StateA())) ASSERT_OK(s);
  // Find the SyncDir of the checkpoint directory right after the commit rename.
  const std::string sb = "ckpt-" + std::to_string(StateB().step);
  bool renamed = false;
  for (int64_t k = 0; k < 100; ++k) {
    const fs::path d = fs::path(base.path()) / ("case-" + std::to_string(k));
    CopyTree(tmpl, d);
    FaultInjectionEnv env(FastDisk());
    env.FailAt(k, EIO);
    const Status first = SaveOnRanks(setup, d.string(), &env, StateB())[0];
    const std::string hit = env.last_fault();
    if (hit.rfind("Rename ", 0) == 0 && hit.ends_with("/" + sb)) renamed = true;
    if (!renamed || hit != "SyncDir " + d.string()) {
      fs::remove_all(d);
      continue;
    }
    EXPECT_EQ(first.code(), StatusCode::kAborted) << first.ToString();
    const Status retry = SaveOnRanks(setup, d.string(), &env, StateB())[0];
    ASSERT_OK(retry);
    ASSERT_OK(env.PowerCut());
    const Restored r = RestoreFresh(d.string());
    ASSERT_OK(r.status);
    ASSERT_TRUE(r.state.has_value());
    EXPECT_EQ(Which(*r.state, StateA(), StateB()), "new")
        << "the retried Save returned OK, yet B did not survive a power cut";
    return;
  }
  FAIL() << "never hit the SyncDir after the commit rename";
}

}  // namespace
}  // namespace holdfast
