// BackupAndRestore end to end: fmnist_mlp under a real mpirun is interrupted
// (--interrupt-at-*), run again with the same --backup-dir, and must end with
// exactly the weights of a run that was never interrupted.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tests/testutil/subprocess.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::CountLines;
using testing::ProcessResult;
using testing::RunProcess;

// 1000 samples in global batches of 50: 20 steps per epoch, 60 in all.
const std::vector<std::string> kData = {"--train-samples", "1000", "--threads", "1", "--quiet"};
const std::vector<std::string> kRun = {"--epochs", "3", "--save-freq", "7"};
constexpr int kStepsPerEpoch = 20;

class ResumeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("holdfast-resume-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // fmnist_mlp on np ranks with kRun plus `extra`; the summary is parsed
  // when the run wrote one.
  struct Run {
    ProcessResult process;
    nlohmann::json summary;
  };
  Run Train(int np, std::vector<std::string> extra,
            const std::vector<std::string>& schedule = kRun) {
    const std::string summary =
        (dir_ / std::string("s").append(std::to_string(runs_++)).append(".json")).string();
    std::vector<std::string> argv = {
        TIMEOUT, "--kill-after=5",   "60",       MPIRUN,           "--oversubscribe",
        "-np",   std::to_string(np), FMNIST_MLP, "--summary-json", summary};
    argv.insert(argv.end(), kData.begin(), kData.end());
    argv.insert(argv.end(), schedule.begin(), schedule.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    Run run;
    run.process =
        RunProcess(argv, {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"});
    std::ifstream in(summary);
    if (in) run.summary = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    return run;
  }
  std::string Backup() const { return (dir_ / "backup").string(); }

  fs::path dir_;
  int runs_ = 0;
};

class BitExactResumeTest : public ResumeTest, public ::testing::WithParamInterface<int> {};

// Interrupted after S steps with a save every 7: mid-epoch (13), at an epoch
// boundary (20, 40), and right after a save (35); the rerun resumes at the
// last multiple of 7 and ends bit-identical to the uninterrupted run.
TEST_P(BitExactResumeTest, InterruptedRunsEndWithTheUninterruptedWeights) {
  const int np = GetParam();
  const Run straight = Train(np, {});
  ASSERT_EQ(straight.process.exit_code, 0) << straight.process.err;
  const std::string expected = straight.summary["weights_xxh64"];
  for (int stop : {13, 20, 35, 40}) {
    SCOPED_TRACE("interrupted after step " + std::to_string(stop));
    fs::remove_all(Backup());
    const Run broken =
        Train(np, {"--backup-dir", Backup(), "--interrupt-at-step", std::to_string(stop)});
    ASSERT_EQ(broken.process.exit_code, 1) << broken.process.err;
    EXPECT_NE(broken.process.err.find("interrupted after step"), std::string::npos);
    const Run resumed = Train(np, {"--backup-dir", Backup()});
    ASSERT_EQ(resumed.process.exit_code, 0) << resumed.process.err;
    const int saved = stop / 7 * 7;
    ASSERT_TRUE(resumed.summary["resumed_from"].is_object()) << resumed.summary.dump();
    EXPECT_EQ(resumed.summary["resumed_from"]["step"], saved);
    EXPECT_EQ(resumed.summary["resumed_from"]["epoch"], saved / kStepsPerEpoch);
    EXPECT_EQ(resumed.summary["resumed_from"]["batch"], saved % kStepsPerEpoch);
    EXPECT_EQ(resumed.summary["steps"], 3 * kStepsPerEpoch);
    EXPECT_EQ(resumed.summary["weights_xxh64"], expected);
    // The resumed epoch's figures equal the uninterrupted run's: the
    // epoch's running sums were restored too.
    const nlohmann::json& last = resumed.summary["history"].back();
    EXPECT_EQ(last["loss"], straight.summary["history"].back()["loss"]);
    EXPECT_FALSE(fs::exists(fs::path(Backup()) / "LATEST")) << "backup not deleted after success";
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, BitExactResumeTest, ::testing::Values(1, 2, 3),
                         [](const auto& info) { return "np" + std::to_string(info.param); });

class AsyncResumeTest : public ResumeTest, public ::testing::WithParamInterface<int> {};

// --async-checkpoint, a save begun every 7 steps: training is unchanged, and
// an interrupted run resumes from the newest save that resolved before the
// interruption. Stopped right after the save at 35 began (still being
// written, never committed): from 28, exactly, the previous one. Stopped at
// an epoch boundary, 6 steps after the save at 14 began: from 14 if it
// resolved by then, else 7 (at most one save in flight). Either way the
// rerun, async too, ends with the uninterrupted weights.
TEST_P(AsyncResumeTest, InterruptedAsyncRunsEndWithTheUninterruptedWeights) {
  const int np = GetParam();
  const std::vector<std::string> async = {"--backup-dir", Backup(), "--async-checkpoint"};
  const Run straight = Train(np, {});
  ASSERT_EQ(straight.process.exit_code, 0) << straight.process.err;
  const std::string expected = straight.summary["weights_xxh64"];
  const Run uninterrupted = Train(np, async);
  ASSERT_EQ(uninterrupted.process.exit_code, 0) << uninterrupted.process.err;
  EXPECT_EQ(uninterrupted.summary["weights_xxh64"], expected) << "async saves changed training";
  EXPECT_EQ(uninterrupted.summary["history"].back()["loss"],
            straight.summary["history"].back()["loss"]);
  EXPECT_EQ(uninterrupted.summary["checkpoints_committed"], 8);  // 7, 14, ..., 56
  EXPECT_EQ(uninterrupted.summary["checkpoints_failed"], 0);
  EXPECT_FALSE(fs::exists(fs::path(Backup()) / "LATEST")) << "backup not deleted after success";

  for (const auto& [stop, resumable] :
       std::vector<std::pair<int, std::vector<int>>>{{35, {28}}, {20, {14, 7}}}) {
    SCOPED_TRACE("interrupted after step " + std::to_string(stop));
    fs::remove_all(Backup());
    std::vector<std::string> interrupted = async;
    interrupted.insert(interrupted.end(), {"--interrupt-at-step", std::to_string(stop)});
    const Run broken = Train(np, interrupted);
    ASSERT_EQ(broken.process.exit_code, 1) << broken.process.err;
    EXPECT_NE(broken.process.err.find("interrupted after step"), std::string::npos);
    const Run resumed = Train(np, async);
    ASSERT_EQ(resumed.process.exit_code, 0) << resumed.process.err;
    ASSERT_TRUE(resumed.summary["resumed_from"].is_object()) << resumed.summary.dump();
    const int from = resumed.summary["resumed_from"]["step"];
    EXPECT_NE(std::find(resumable.begin(), resumable.end(), from), resumable.end())
        << "resumed from step " << from;
    EXPECT_EQ(resumed.summary["resumed_from"]["epoch"], from / kStepsPerEpoch);
    EXPECT_EQ(resumed.summary["resumed_from"]["batch"], from % kStepsPerEpoch);
    EXPECT_EQ(resumed.summary["steps"], 3 * kStepsPerEpoch);
    EXPECT_EQ(resumed.summary["weights_xxh64"], expected);
    EXPECT_EQ(resumed.summary["history"].back()["loss"],
              straight.summary["history"].back()["loss"]);
    // Every save after the resumed step: begun at 7k > from, all committed.
    EXPECT_EQ(resumed.summary["checkpoints_committed"], 8 - from / 7);
    EXPECT_EQ(resumed.summary["checkpoints_failed"], 0);
    EXPECT_FALSE(fs::exists(fs::path(Backup()) / "LATEST")) << "backup not deleted after success";
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, AsyncResumeTest, ::testing::Values(1, 2),
                         [](const auto& info) { return "np" + std::to_string(info.param); });

// The seeds' example: interrupted when epoch 4 (0-based) of 10 begins, with a
// save at every epoch end; the rerun trains exactly the 6 missing epochs.
TEST_F(ResumeTest, SeedsExampleRunsExactlyTheMissingEpochs) {
  const std::vector<std::string> ten = {"--epochs", "10", "--save-freq", "epoch"};
  const Run straight = Train(1, {}, ten);
  ASSERT_EQ(straight.process.exit_code, 0) << straight.process.err;
  const Run broken = Train(1, {"--backup-dir", Backup(), "--interrupt-at-epoch", "4"}, ten);
  ASSERT_EQ(broken.process.exit_code, 1) << broken.process.err;
  const Run resumed = Train(1, {"--backup-dir", Backup()}, ten);
  ASSERT_EQ(resumed.process.exit_code, 0) << resumed.process.err;
  EXPECT_EQ(resumed.summary["epochs_run"], 6);
  EXPECT_EQ(resumed.summary["history"].size(), 6u);
  EXPECT_EQ(resumed.summary["history"][0]["epoch"], 4);
  EXPECT_EQ(resumed.summary["epochs_completed"], 10);
  EXPECT_EQ(resumed.summary["weights_xxh64"], straight.summary["weights_xxh64"]);
}

// Saved by 3 ranks, resumed by 2 with the same global batch: the same
// (epoch, batch), and a run that trains on to the end.
TEST_F(ResumeTest, ResumesOnAnotherWorldSizeAtTheSamePosition) {
  const Run broken =
      Train(3, {"--backup-dir", Backup(), "--interrupt-at-step", "30", "--keep-checkpoint"});
  ASSERT_EQ(broken.process.exit_code, 1) << broken.process.err;
  const Run resumed = Train(2, {"--backup-dir", Backup()});
  ASSERT_EQ(resumed.process.exit_code, 0) << resumed.process.err;
  EXPECT_EQ(resumed.summary["world_size"], 2);
  EXPECT_EQ(resumed.summary["resumed_from"]["step"], 28);
  EXPECT_EQ(resumed.summary["resumed_from"]["epoch"], 1);
  EXPECT_EQ(resumed.summary["resumed_from"]["batch"], 8);
  EXPECT_EQ(resumed.summary["steps"], 3 * kStepsPerEpoch);
}

// A backup written by another model or run is refused (exit 2); a backup
// whose every checkpoint is damaged is an error (exit 1), never a silent
// fresh start, unless the user asks for one.
TEST_F(ResumeTest, ForeignOrDamagedBackupsAreClearErrors) {
  const Run broken =
      Train(2, {"--backup-dir", Backup(), "--interrupt-at-step", "30", "--double-checkpoint"});
  ASSERT_EQ(broken.process.exit_code, 1) << broken.process.err;

  const Run other_model = Train(2, {"--backup-dir", Backup(), "--hidden", "128,32"});
  EXPECT_EQ(other_model.process.exit_code, 2) << other_model.process.err;
  EXPECT_NE(other_model.process.err.find("another run"), std::string::npos)
      << other_model.process.err;
  const Run other_batch = Train(2, {"--backup-dir", Backup(), "--batch", "40"});
  EXPECT_EQ(other_batch.process.exit_code, 2) << other_batch.process.err;
  EXPECT_NE(other_batch.process.err.find("global batch size"), std::string::npos)
      << other_batch.process.err;

  // Damage every shard of both kept checkpoints.
  int damaged = 0;
  for (const auto& ckpt : fs::directory_iterator(Backup())) {
    if (!ckpt.is_directory()) continue;  // LATEST
    for (const auto& f : fs::directory_iterator(ckpt.path())) {
      if (f.path().extension() == ".bin") {
        std::fstream io(f.path(), std::ios::in | std::ios::out | std::ios::binary);
        io.seekp(100);
        io.put('\x7f');
        ++damaged;
      }
    }
  }
  ASSERT_EQ(damaged, 4);  // 2 checkpoints x 2 shards
  const Run refused = Train(2, {"--backup-dir", Backup()});
  EXPECT_EQ(refused.process.exit_code, 1) << refused.process.err;
  EXPECT_NE(refused.process.err.find("cannot restore"), std::string::npos) << refused.process.err;
  const Run fresh = Train(2, {"--backup-dir", Backup(), "--start-fresh-if-damaged"});
  EXPECT_EQ(fresh.process.exit_code, 0) << fresh.process.err;
  EXPECT_TRUE(fresh.summary["resumed_from"].is_null());
}

}  // namespace
}  // namespace holdfast
