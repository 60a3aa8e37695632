// PreemptionHandler with real signals (raise()) in one process: the flag, Fit
// with BackupAndRestore stopping at one step with a committed checkpoint that
// resumes bit-exact, signals arriving in the middle of a save (not lost,
// nothing torn), and the custom-loop path through CheckpointManager.
#include "checkpoint/preemption.h"

#include <gtest/gtest.h>

#include <csignal>
#include <filesystem>
#include <functional>
#include <string>

#include "checkpoint/backup_and_restore.h"
#include "checkpoint/manager.h"
#include "core/fit.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;

TEST(PreemptionHandlerTest, KeepsTheFirstSignalAndRestoresThePreviousHandlers) {
  struct sigaction before;
  ASSERT_EQ(sigaction(SIGUSR1, nullptr, &before), 0);
  {
    PreemptionHandler handler;
    EXPECT_FALSE(handler.requested());
    ASSERT_EQ(raise(SIGUSR1), 0);  // would end the process without the handler
    EXPECT_TRUE(handler.requested());
    EXPECT_EQ(handler.signal_number(), SIGUSR1);
    ASSERT_EQ(raise(SIGTERM), 0);
    EXPECT_EQ(handler.signal_number(), SIGUSR1);
    handler.Clear();
    EXPECT_FALSE(handler.requested());
  }
  struct sigaction after;
  ASSERT_EQ(sigaction(SIGUSR1, nullptr, &after), 0);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
}

// A program-lifetime handler around a library's: the inner one keeps what
// the outer caught, its destruction leaves the signals caught, and only the
// last one restores the old dispositions.
TEST(PreemptionHandlerTest, HandlersNestAndShareOneFlag) {
  struct sigaction before;
  ASSERT_EQ(sigaction(SIGTERM, nullptr, &before), 0);
  {
    PreemptionHandler outer;
    ASSERT_EQ(raise(SIGTERM), 0);
    {
      PreemptionHandler inner;
      EXPECT_EQ(inner.signal_number(), SIGTERM) << "the inner handler lost a caught signal";
    }
    outer.Clear();
    ASSERT_EQ(raise(SIGTERM), 0);  // still caught: would end the process otherwise
    EXPECT_EQ(outer.signal_number(), SIGTERM);
  }
  struct sigaction after;
  ASSERT_EQ(sigaction(SIGTERM, nullptr, &after), 0);
  EXPECT_EQ(after.sa_handler, before.sa_handler);
}

TEST(PreemptionHandlerTest, SigintOnlyWhenAsked) {
  PreemptionHandler handler({.signals = {SIGTERM, SIGUSR1, SIGINT}});
  ASSERT_EQ(raise(SIGINT), 0);
  EXPECT_EQ(handler.signal_number(), SIGINT);
}

// Runs `f` from OnBatchEnd once `step` steps are done.
class AtStep final : public Callback {
 public:
  AtStep(int64_t step, std::function<void()> f) : step_(step), f_(std::move(f)) {}
  void OnBatchEnd(TrainingState& s) override {
    if (s.step() == step_) f_();
  }

 private:
  int64_t step_;
  std::function<void()> f_;
};

// An Env over the real one that runs a hook when a shard file is created:
// a signal delivered in the middle of a checkpoint save.
class HookedEnv final : public EnvWrapper {
 public:
  HookedEnv() : EnvWrapper(Env::Default()) {}
  std::function<void()> on_shard;
  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    if (on_shard && path.find("shard-") != std::string::npos) on_shard();
    return base()->NewWritableFile(path);
  }
};

// 64 samples in batches of 8: 8 steps per epoch, 24 in all.
struct TrainedRun {
  Trainee trainee = MakeClassifier(11, /*dropout=*/true);
  History history;
  std::optional<Preemption> preempted;
  std::optional<ResumePoint> resumed;
};

TrainedRun Train(const std::string& dir, std::vector<Callback*> extra, Env* env = nullptr,
                 int64_t save_freq = 5) {
  TrainedRun run;
  std::optional<BackupAndRestore> backup;
  FitOptions o;
  o.epochs = 3;
  o.batch_size = 8;
  o.seed = 3;
  if (!dir.empty()) {
    backup.emplace(BackupAndRestoreOptions{
        .checkpoint = {.directory = dir, .save_before_preemption = true, .env = env},
        .save_freq = save_freq});
    o.callbacks.push_back(&*backup);
  }
  o.callbacks.insert(o.callbacks.end(), extra.begin(), extra.end());
  run.history =
      Fit(*run.trainee.model, *run.trainee.optimizer, SoftmaxCrossEntropy(), MakeBlobs(64, 3), o);
  if (backup) {
    run.preempted = backup->preempted();
    run.resumed = backup->resumed_from();
  }
  return run;
}

TEST(PreemptionFitTest, ASignalStopsAtTheNextStepWithACommittedCheckpointThatResumesBitExact) {
  TempDir dir;
  const uint64_t expected = Train("", {}).trainee.Hash();

  AtStep signal_at_10(10, [] { raise(SIGTERM); });
  TrainedRun preempted = Train(dir.path(), {&signal_at_10});
  ASSERT_TRUE(preempted.preempted.has_value());
  // Raised after step 10; requested at step 11's start; agreed at its end.
  EXPECT_EQ(preempted.preempted->step, 11);
  EXPECT_TRUE(preempted.preempted->committed);
  EXPECT_EQ(preempted.preempted->signal, SIGTERM);
  EXPECT_EQ(preempted.trainee.optimizer->iterations(), 11);
  EXPECT_TRUE(fs::exists(fs::path(dir.path()) / "ckpt-11" / "MANIFEST.json"));

  TrainedRun resumed = Train(dir.path(), {});
  EXPECT_FALSE(resumed.preempted.has_value());
  ASSERT_TRUE(resumed.resumed.has_value());
  EXPECT_EQ(resumed.resumed->step, 11);
  EXPECT_EQ(resumed.resumed->epoch, 1);
  EXPECT_EQ(resumed.resumed->batch, 3);
  EXPECT_EQ(resumed.trainee.Hash(), expected);
}

TEST(PreemptionFitTest, ASignalDuringAPeriodicSaveIsNotLostAndASecondOneChangesNothing) {
  TempDir dir;
  const uint64_t expected = Train("", {}).trainee.Hash();
  HookedEnv env;
  int shards = 0;
  env.on_shard = [&] {
    ++shards;
    if (shards == 2) raise(SIGUSR1);  // inside the periodic save at step 10
    if (shards == 3) raise(SIGTERM);  // inside the preemption save at step 11
  };
  TrainedRun preempted = Train(dir.path(), {}, &env);
  ASSERT_TRUE(preempted.preempted.has_value());
  EXPECT_EQ(preempted.preempted->step, 11);
  EXPECT_TRUE(preempted.preempted->committed);
  EXPECT_EQ(preempted.preempted->signal, SIGUSR1);
  EXPECT_EQ(shards, 3);
  EXPECT_TRUE(PrepareAreas(dir.path()).empty());

  TrainedRun resumed = Train(dir.path(), {});
  ASSERT_TRUE(resumed.resumed.has_value());
  EXPECT_EQ(resumed.resumed->step, 11);
  EXPECT_EQ(resumed.trainee.Hash(), expected);
}

TEST(PreemptionFitTest, ASignalBeforeTrainingStartsStopsAfterTheFirstStep) {
  TempDir dir;
  BackupAndRestore backup(
      {.checkpoint = {.directory = dir.path(), .save_before_preemption = true}});
  raise(SIGTERM);  // e.g. while the data was loading
  Trainee t = MakeClassifier(12);
  FitOptions o;
  o.batch_size = 8;
  o.callbacks = {&backup};
  Fit(*t.model, *t.optimizer, SoftmaxCrossEntropy(), MakeBlobs(64, 3), o);
  ASSERT_TRUE(backup.preempted().has_value());
  EXPECT_EQ(backup.preempted()->step, 1);
  EXPECT_TRUE(fs::exists(fs::path(dir.path()) / "ckpt-1" / "MANIFEST.json"));
}

// A program's handler for its whole life, lent to BackupAndRestore: the one
// handler of the process, catching a signal that came before Fit and before
// the callback existed.
TEST(PreemptionFitTest, TheProgramsHandlerIsLentAndIsTheOnlyOne) {
  TempDir dir;
  PreemptionHandler program({.signals = {SIGTERM, SIGUSR1, SIGINT}});
  raise(SIGINT);  // while MPI started, say: only the program's handler catches SIGINT
  BackupAndRestore backup({.checkpoint = {.directory = dir.path(),
                                          .save_before_preemption = true,
                                          .preemption_handler = &program}});
  int live_during_training = -1;
  AtStep count(1, [&] { live_during_training = PreemptionHandler::live_handlers(); });
  Trainee t = MakeClassifier(12);
  FitOptions o;
  o.batch_size = 8;
  o.callbacks = {&backup, &count};
  Fit(*t.model, *t.optimizer, SoftmaxCrossEntropy(), MakeBlobs(64, 3), o);
  EXPECT_EQ(live_during_training, 1);
  ASSERT_TRUE(backup.preempted().has_value());
  EXPECT_EQ(backup.preempted()->step, 1);
  EXPECT_EQ(backup.preempted()->signal, SIGINT);
  EXPECT_TRUE(fs::exists(fs::path(dir.path()) / "ckpt-1" / "MANIFEST.json"));
}

TEST(PreemptionFitTest, WithoutALentHandlerTheCallbackHoldsOneFromConstruction) {
  TempDir dir;
  ASSERT_EQ(PreemptionHandler::live_handlers(), 0);
  {
    BackupAndRestore backup(
        {.checkpoint = {.directory = dir.path(), .save_before_preemption = true}});
    EXPECT_EQ(PreemptionHandler::live_handlers(), 1);
    int live_during_training = -1;
    AtStep count(1, [&] { live_during_training = PreemptionHandler::live_handlers(); });
    Trainee t = MakeClassifier(12);
    FitOptions o;
    o.batch_size = 8;
    o.epochs = 1;
    o.callbacks = {&backup, &count};
    Fit(*t.model, *t.optimizer, SoftmaxCrossEntropy(), MakeBlobs(64, 3), o);
    EXPECT_EQ(live_during_training, 1);  // the manager borrows it
  }
  EXPECT_EQ(PreemptionHandler::live_handlers(), 0);
}

// The custom-loop path: a Trainer and a CheckpointManager over it (64
// samples in batches of 8), the loop calling SaveIfPreempted after each step.
struct CustomLoop {
  explicit CustomLoop(const std::string& dir, PreemptionHandler* lent = nullptr)
      : manager(&checkpoint, &comm,
                {.directory = dir,
                 .checkpoint_interval = 100,
                 .save_before_preemption = true,
                 .preemption_handler = lent,
                 .replica = &trainer.replica()}) {}
  static FitOptions BatchesOf8() {
    FitOptions o;
    o.batch_size = 8;
    return o;
  }
  // Trains batch `b` of epoch 0; then SaveIfPreempted: whether it saved.
  bool StepAndSaveIfPreempted(int64_t b) {
    trainer.Step(order, plan.Batch(b));
    auto preempted = manager.SaveIfPreempted();
    EXPECT_TRUE(preempted.ok()) << preempted.status().ToString();
    return preempted.ok() && *preempted;
  }

  Trainee t = MakeClassifier(13);
  const Dataset data = MakeBlobs(64, 3);
  const SoftmaxCrossEntropy loss;
  Trainer trainer{*t.model, *t.optimizer, loss, data, BatchesOf8()};
  Checkpoint checkpoint{t.model.get(), t.optimizer.get()};
  LocalCommunicator comm;
  CheckpointManager manager;
  const BatchPlan plan{data.size(), 8, false};
  const std::vector<uint32_t> order = EpochPermutation(1, 0, 64);
};

TEST(PreemptionManagerTest, SaveIfPreemptedCommitsAtTheAgreedStep) {
  TempDir dir;
  CustomLoop loop(dir.path());
  int64_t stopped_at = -1;
  for (int64_t b = 0; b < loop.plan.num_batches(); ++b) {
    if (b == 3) raise(SIGUSR1);
    if (loop.StepAndSaveIfPreempted(b)) {
      stopped_at = loop.t.optimizer->iterations();
      break;
    }
  }
  // Raised before step 4; taken by SaveIfPreempted after step 4; agreed in step 5.
  EXPECT_EQ(stopped_at, 5);
  ASSERT_TRUE(loop.manager.Latest().has_value());
  EXPECT_EQ(loop.manager.Latest()->step, 5);
}

TEST(PreemptionManagerTest, ALentHandlerIsTheOneTheManagerSavesOn) {
  TempDir dir;
  PreemptionHandler program({.signals = {SIGINT}});
  CustomLoop loop(dir.path(), &program);
  EXPECT_EQ(PreemptionHandler::live_handlers(), 1);
  raise(SIGINT);  // caught by the program's handler only: the manager has none of its own
  EXPECT_FALSE(loop.StepAndSaveIfPreempted(0));  // requests the stop, agreed in the next step
  EXPECT_TRUE(loop.StepAndSaveIfPreempted(1));
  EXPECT_EQ(loop.manager.preemption_signal(), SIGINT);
  ASSERT_TRUE(loop.manager.Latest().has_value());
  EXPECT_EQ(loop.manager.Latest()->step, 2);
}

}  // namespace
}  // namespace holdfast
