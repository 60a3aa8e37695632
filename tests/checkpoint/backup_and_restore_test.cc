// BackupAndRestore itself (its preemption path is in preemption_test.cc):
// save points, the exact resume at the next batch, the run-identity checks,
// what stays in the backup directory, damaged backups.
#include "checkpoint/backup_and_restore.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <stdexcept>

#include "core/loss.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;

// Ends Fit after step `at` (after the other callbacks saw it): a job killed
// right after that step, with whatever the backup holds by then.
class StopAfterStep : public Callback {
 public:
  explicit StopAfterStep(int64_t at) : at_(at) {}
  void OnBatchEnd(TrainingState& s) override {
    if (s.step() == at_) s.stop_training = true;
  }

 private:
  int64_t at_;
};

// 64 samples in batches of 8: 8 steps per epoch, 3 epochs.
FitOptions Options(uint64_t seed = 3) {
  FitOptions o;
  o.epochs = 3;
  o.batch_size = 8;
  o.seed = seed;
  return o;
}

struct TrainedRun {
  Trainee trainee = MakeClassifier(11, /*dropout=*/true);
  std::optional<ResumePoint> resumed;
  SaveStats stats;
};

// Trains with a BackupAndRestore of `backup` (none when its directory
// is empty) and the `extra` callbacks after it.
TrainedRun Train(const BackupAndRestoreOptions& backup, std::vector<Callback*> extra = {},
                 FitOptions options = Options()) {
  TrainedRun run;
  std::optional<BackupAndRestore> callback;
  if (!backup.checkpoint.directory.empty()) {
    callback.emplace(backup);
    options.callbacks.push_back(&*callback);
  }
  options.callbacks.insert(options.callbacks.end(), extra.begin(), extra.end());
  (void)Fit(*run.trainee.model, *run.trainee.optimizer, SoftmaxCrossEntropy(), MakeBlobs(64, 3),
            options);
  if (callback) {
    run.resumed = callback->resumed_from();
    run.stats = callback->save_stats();
  }
  return run;
}

// The run resumed at `at` and ended with the uninterrupted run's weights.
void ExpectResumedAt(const TrainedRun& run, ResumePoint at, uint64_t expected_hash) {
  ASSERT_TRUE(run.resumed.has_value());
  EXPECT_EQ(run.resumed->epoch, at.epoch);
  EXPECT_EQ(run.resumed->batch, at.batch);
  EXPECT_EQ(run.resumed->step, at.step);
  EXPECT_EQ(run.trainee.Hash(), expected_hash);
}

int CommittedCheckpoints(const std::string& dir) {
  int n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    n += fs::exists(e.path() / "MANIFEST.json");
  }
  return n;
}

TEST(BackupAndRestoreTest, EpochSavesResumeAtTheNextBatchBitExact) {
  const uint64_t expected = Train({}).trainee.Hash();
  TempDir dir;
  // Killed after step 13: the last save was at the end of epoch 1 (step 8).
  StopAfterStep kill(13);
  (void)Train({.checkpoint = {.directory = dir.path()}}, {&kill});
  EXPECT_EQ(CommittedCheckpoints(dir.path()), 1);
  // Saved in OnEpochEnd: epoch 0 with all its 8 batches done, so the
  // resumed run's first batch is epoch 1's first.
  ExpectResumedAt(Train({.checkpoint = {.directory = dir.path()}}), {0, 8, 8}, expected);
}

// Saves every 3 steps, killed after step 13: resumes mid-epoch at step 12,
// with the epoch's running metric sums, and ends with the same bits. Also
// asynchronous.
TEST(BackupAndRestoreTest, StepSavesResumeMidEpochBitExact) {
  const uint64_t expected = Train({}).trainee.Hash();
  for (bool async : {false, true}) {
    SCOPED_TRACE(async ? "async" : "sync");
    TempDir dir;
    StopAfterStep kill(13);
    const BackupAndRestoreOptions backup = {.checkpoint = {.directory = dir.path(), .async = async},
                                            .save_freq = 3};
    (void)Train(backup, {&kill});
    ExpectResumedAt(Train(backup), {1, 4, 12}, expected);
  }
}

// A program's own state beside Fit's: a count of the batches trained.
class CountBatches : public Callback {
 public:
  void OnBatchEnd(TrainingState&) override { ++seen; }
  int64_t seen = 0;
};

// The program tracks its counter through `track`: killed after step 13 and
// resumed from the save at step 8, it counts 24 batches as a run that was
// never stopped does (untracked, it would count 16: a fresh counter).
TEST(BackupAndRestoreTest, TrackedProgramStateResumesWithTheTraining) {
  TempDir dir;
  CountBatches first;
  BackupAndRestoreOptions backup = {.checkpoint = {.directory = dir.path()}};
  backup.track = [&first](Checkpoint& c) { c.Track("batches_seen", &first.seen); };
  StopAfterStep kill(13);
  (void)Train(backup, {&kill, &first});
  EXPECT_EQ(first.seen, 13);

  CountBatches rerun;
  backup.track = [&rerun](Checkpoint& c) { c.Track("batches_seen", &rerun.seen); };
  const TrainedRun resumed = Train(backup, {&rerun});
  ASSERT_TRUE(resumed.resumed.has_value());
  EXPECT_EQ(resumed.resumed->step, 8);
  EXPECT_EQ(rerun.seen, 24);
}

// A run that starts tracking a new object resumes a backup written without
// it only with allow_missing; strict, it is refused naming the object.
TEST(BackupAndRestoreTest, ANewlyTrackedObjectNeedsAllowMissingToResume) {
  TempDir dir;
  StopAfterStep kill(13);
  BackupAndRestoreOptions backup = {.checkpoint = {.directory = dir.path()}};
  (void)Train(backup, {&kill});  // saved at step 8, without "batches_seen"

  CountBatches counter;
  counter.seen = 100;  // the new object's initial value
  backup.track = [&counter](Checkpoint& c) { c.Track("batches_seen", &counter.seen); };
  try {
    (void)Train(backup, {&counter});
    ADD_FAILURE() << "a strict restore accepted a backup without batches_seen";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("it has no batches_seen"), std::string::npos) << e.what();
  }
  EXPECT_EQ(counter.seen, 100);

  backup.restore.allow_missing = true;
  const TrainedRun resumed = Train(backup, {&counter});
  ASSERT_TRUE(resumed.resumed.has_value());
  EXPECT_EQ(resumed.resumed->step, 8);
  EXPECT_EQ(counter.seen, 100 + 16);  // kept its value, then counted the 16 steps left
}

TEST(BackupAndRestoreTest, AFinishedRunDeletesItsBackupUnlessAskedToKeepIt) {
  TempDir deleted, kept;
  TrainedRun a = Train({.checkpoint = {.directory = deleted.path()}, .save_freq = 5});
  EXPECT_GE(a.stats.committed, 4);
  EXPECT_EQ(CommittedCheckpoints(deleted.path()), 0);
  EXPECT_FALSE(fs::exists(fs::path(deleted.path()) / "LATEST"));
  (void)Train({.checkpoint = {.directory = kept.path(), .max_to_keep = 1},
               .save_freq = 5,
               .delete_checkpoint = false});
  EXPECT_EQ(CommittedCheckpoints(kept.path()), 1);
}

TEST(BackupAndRestoreTest, DoubleCheckpointingIsTheDefaultAndOneCanBeKept) {
  for (int keep : {1, 2}) {
    TempDir dir;
    BackupAndRestoreOptions backup = {
        .checkpoint = {.directory = dir.path()}, .save_freq = 5, .delete_checkpoint = false};
    if (keep == 1) backup.checkpoint.max_to_keep = 1;
    (void)Train(backup);
    EXPECT_EQ(CommittedCheckpoints(dir.path()), keep);
  }
}

// Options that cannot work are refused at construction; a communicator
// other than Fit's strategy's when training begins.
TEST(BackupAndRestoreTest, OptionsThatCannotWorkAreRefused) {
  EXPECT_THROW(BackupAndRestore({}), std::invalid_argument);
  TempDir dir;
  EXPECT_THROW(BackupAndRestore({.checkpoint = {.directory = dir.path()}, .save_freq = -2}),
               std::invalid_argument);
  EXPECT_THROW(
      BackupAndRestore({.checkpoint = {.directory = dir.path(), .checkpoint_interval = 5}}),
      std::invalid_argument);
  RunInProcessRanks(2, [&](Communicator& comm) {
    // The ranks' communicator, but Fit runs in one process: they disagree.
    BackupAndRestore backup({.checkpoint = {.directory = dir.path()}}, &comm);
    Trainee t = MakeClassifier(1);
    FitOptions o = Options();
    o.callbacks = {&backup};
    EXPECT_THROW(Fit(*t.model, *t.optimizer, SoftmaxCrossEntropy(), MakeBlobs(64, 3), o),
                 std::invalid_argument);
  });
}

// A backup of another run is refused with the setting named, before any
// state is touched.
TEST(BackupAndRestoreTest, ABackupOfAnotherRunIsRefusedNamingWhatDiffers) {
  TempDir dir;
  StopAfterStep kill(6);
  (void)Train({.checkpoint = {.directory = dir.path()}, .save_freq = 3}, {&kill});
  try {
    (void)Train({.checkpoint = {.directory = dir.path()}, .save_freq = 3}, {}, Options(/*seed=*/4));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("seed 3, this run has 4"), std::string::npos) << e.what();
  }
  FitOptions other_batch = Options();
  other_batch.batch_size = 16;
  EXPECT_THROW((void)Train({.checkpoint = {.directory = dir.path()}}, {}, other_batch),
               std::invalid_argument);
  // A checkpoint that a plain CheckpointManager wrote has no position.
  TempDir plain;
  LocalCommunicator comm;
  Trainee t = MakeClassifier(11, /*dropout=*/true);
  Checkpoint c(t.model.get(), t.optimizer.get());
  CheckpointManager m(&c, &comm, {.directory = plain.path()});
  ASSERT_OK(m.Save());
  try {
    (void)Train({.checkpoint = {.directory = plain.path()}});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not written by BackupAndRestore"), std::string::npos)
        << e.what();
  }
}

// save_freq = kSaveFreqAuto measures the steps first, then saves as often
// as the budget allows; a run stopped after its first save resumes from it
// and ends with the uninterrupted run's weights.
TEST(BackupAndRestoreTest, AutoSaveFreqSavesWithinTheBudgetAndResumes) {
  const uint64_t expected = Train({}).trainee.Hash();
  TempDir dir;
  std::optional<AutoSaveReport> report;
  {
    BackupAndRestore backup({.checkpoint = {.directory = dir.path()},
                             .save_freq = kSaveFreqAuto,
                             .delete_checkpoint = false});
    StopAfterStep kill(23);
    FitOptions o = Options();
    o.callbacks = {&backup, &kill};
    Trainee t = MakeClassifier(11, /*dropout=*/true);
    (void)Fit(*t.model, *t.optimizer, SoftmaxCrossEntropy(), MakeBlobs(64, 3), o);
    EXPECT_EQ(backup.saves_committed(), 1) << "20 steps measured, then the first save";
    report = backup.auto_save();
  }
  ASSERT_TRUE(report.has_value());
  EXPECT_EQ(report->budget, 0.035);
  EXPECT_GT(report->step_seconds, 0);
  EXPECT_GE(report->interval, 1);
  EXPECT_TRUE(fs::exists(fs::path(dir.path()) / "ckpt-21"));
  ExpectResumedAt(Train({.checkpoint = {.directory = dir.path()}, .save_freq = kSaveFreqAuto}),
                  {2, 5, 21}, expected);
  EXPECT_THROW(BackupAndRestore({.checkpoint = {.directory = dir.path(), .overhead_budget = 0},
                                 .save_freq = kSaveFreqAuto}),
               std::invalid_argument);
}

// The only checkpoint damaged: an error, or a fresh start when asked.
TEST(BackupAndRestoreTest, ADamagedBackupFailsOrStartsFreshWhenAsked) {
  const uint64_t fresh = Train({}).trainee.Hash();
  TempDir dir;
  StopAfterStep kill(6);
  (void)Train({.checkpoint = {.directory = dir.path(), .max_to_keep = 1}, .save_freq = 3}, {&kill});
  const fs::path shard = fs::path(dir.path()) / "ckpt-6" / "shard-0-of-1.bin";
  ASSERT_TRUE(fs::exists(shard));
  FlipByte(shard, fs::file_size(shard) / 2);
  EXPECT_THROW(
      (void)Train({.checkpoint = {.directory = dir.path(), .max_to_keep = 1}, .save_freq = 3}),
      std::runtime_error);
  TrainedRun started = Train({.checkpoint = {.directory = dir.path(), .max_to_keep = 1},
                              .save_freq = 3,
                              .start_fresh_if_damaged = true});
  EXPECT_FALSE(started.resumed.has_value());
  EXPECT_EQ(started.trainee.Hash(), fresh);
}

}  // namespace
}  // namespace holdfast
