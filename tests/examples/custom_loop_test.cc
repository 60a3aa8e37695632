// examples/custom_loop end to end: a hand-written loop over a
// CheckpointManager (max_to_keep=2) that is stopped part way and rerun ends
// with the weights of a run that never stopped, alone and on 2 MPI ranks.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "tests/testutil/subprocess.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::ProcessResult;
using testing::RunProcess;

// 1000 samples, batch 50: 20 steps per epoch, 60 steps; a save every 7.
const std::vector<std::string> kRun = {"--train-samples", "1000", "--checkpoint-interval", "7"};

// Everything the loop carries ended the same: the weights, their EMA and
// the schedule's learning rate.
void ExpectSameEnd(const nlohmann::json& run, const nlohmann::json& straight) {
  for (const char* key : {"weights_xxh64", "ema_xxh64", "learning_rate"}) {
    ASSERT_TRUE(straight.contains(key)) << key;
    EXPECT_EQ(run[key], straight[key]) << key;
  }
}

class CustomLoopTest : public ::testing::TestWithParam<int> {
 protected:
  struct Run {
    ProcessResult process;
    nlohmann::json summary;
  };
  Run Train(const std::string& checkpoints, std::vector<std::string> extra = {},
            const std::string& epochs = "3") {
    const std::string summary = dir_.File("summary-" + std::to_string(runs_++) + ".json");
    std::vector<std::string> argv;
    if (GetParam() > 1) argv = {MPIRUN, "--oversubscribe", "-np", std::to_string(GetParam())};
    argv.insert(argv.end(),
                {CUSTOM_LOOP, "--checkpoint-dir", checkpoints, "--summary-json", summary});
    argv.insert(argv.end(), kRun.begin(), kRun.end());
    argv.insert(argv.end(), {"--epochs", epochs});
    argv.insert(argv.end(), extra.begin(), extra.end());
    Run run;
    run.process = RunProcess(argv, testing::kMpirunEnv);
    std::ifstream in(summary);
    if (in) run.summary = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    return run;
  }
  TempDir dir_;
  int runs_ = 0;
};

TEST_P(CustomLoopTest, StoppedAndRerunEndsWithTheWeightsOfAnUnstoppedRun) {
  const Run straight = Train(dir_.File("straight"));
  ASSERT_EQ(straight.process.exit_code, 0) << straight.process.err;
  EXPECT_EQ(straight.summary["steps"], 60);
  // max_to_keep=2: the last two of the saves at 7, 14, ..., 56.
  EXPECT_EQ(straight.summary["checkpoints"], nlohmann::json({"ckpt-49", "ckpt-56"}));
  // The schedule acted, so its state had to be saved for an exact resume.
  EXPECT_LT(straight.summary["learning_rate"].get<double>(), 1e-3);

  for (int stop : {30, 45}) {
    SCOPED_TRACE("stopped at step " + std::to_string(stop));
    const std::string checkpoints = dir_.File("stopped-" + std::to_string(stop));
    const Run stopped = Train(checkpoints, {"--stop-at-step", std::to_string(stop)});
    ASSERT_EQ(stopped.process.exit_code, 1) << stopped.process.err;
    const Run rerun = Train(checkpoints);
    ASSERT_EQ(rerun.process.exit_code, 0) << rerun.process.err;
    EXPECT_EQ(rerun.summary["resumed_from_step"], stop / 7 * 7);
    EXPECT_EQ(rerun.summary["steps_run"], 60 - stop / 7 * 7);
    ExpectSameEnd(rerun.summary, straight.summary);
    EXPECT_NE(rerun.process.out.find("restored step " + std::to_string(stop / 7 * 7)),
              std::string::npos)
        << rerun.process.out;
  }
}

// --async-checkpoint: the saves begun at 7, 14, ... are written in the
// background and commit a few steps later. Training is unchanged. Stopped
// right after the save at 28 began (still in flight, never committed), the
// rerun restores 21, exactly; stopped 3 steps after the save at 42 began,
// 42 if it resolved by then, else 35 (at most one save is in flight). The
// rerun, async too, ends with the weights of a run that never stopped.
TEST_P(CustomLoopTest, AsyncSavesStoppedMidSaveAndRerunEndWithTheWeightsOfAnUnstoppedRun) {
  const Run straight = Train(dir_.File("straight"));
  ASSERT_EQ(straight.process.exit_code, 0) << straight.process.err;
  const Run async = Train(dir_.File("straight-async"), {"--async-checkpoint"});
  ASSERT_EQ(async.process.exit_code, 0) << async.process.err;
  EXPECT_EQ(async.summary["weights_xxh64"], straight.summary["weights_xxh64"])
      << "async saves changed training";
  EXPECT_EQ(async.summary["checkpoints"], nlohmann::json({"ckpt-49", "ckpt-56"}));
  EXPECT_EQ(async.summary["saves"]["started"], 8) << async.summary.dump();
  EXPECT_EQ(async.summary["saves"]["committed"], 8) << async.summary.dump();
  EXPECT_EQ(async.summary["saves"]["failed"], 0) << async.summary.dump();

  for (const auto& [stop, restorable] :
       std::vector<std::pair<int, std::vector<int>>>{{28, {21}}, {45, {42, 35}}}) {
    SCOPED_TRACE("stopped at step " + std::to_string(stop));
    const std::string checkpoints = dir_.File("async-stopped-" + std::to_string(stop));
    const Run stopped =
        Train(checkpoints, {"--async-checkpoint", "--stop-at-step", std::to_string(stop)});
    ASSERT_EQ(stopped.process.exit_code, 1) << stopped.process.err;
    const Run rerun = Train(checkpoints, {"--async-checkpoint"});
    ASSERT_EQ(rerun.process.exit_code, 0) << rerun.process.err;
    ASSERT_TRUE(rerun.summary["resumed_from_step"].is_number()) << rerun.summary.dump();
    const int from = rerun.summary["resumed_from_step"];
    EXPECT_NE(std::find(restorable.begin(), restorable.end(), from), restorable.end())
        << "restored step " << from;
    EXPECT_EQ(rerun.summary["steps_run"], 60 - from);
    ExpectSameEnd(rerun.summary, straight.summary);
    // Every save after the restored step began and committed.
    EXPECT_EQ(rerun.summary["saves"]["started"], (56 - from) / 7) << rerun.summary.dump();
    EXPECT_EQ(rerun.summary["saves"]["committed"], (56 - from) / 7) << rerun.summary.dump();
    EXPECT_EQ(rerun.summary["checkpoints"], nlohmann::json({"ckpt-49", "ckpt-56"}));
  }
}

// SIGTERM to one rank: every rank saves at one step (SaveIfPreempted), exit
// 75; the rerun resumes there and ends with the unpreempted weights.
TEST_P(CustomLoopTest, PreemptedBySigtermSavesExits75AndTheRerunIsBitExact) {
  const std::vector<std::string> longer = {"--epochs", "12"};
  const Run straight = Train(dir_.File("straight"), {}, "12");
  ASSERT_EQ(straight.process.exit_code, 0) << straight.process.err;
  const std::string checkpoints = dir_.File("preempted");
  std::vector<std::string> argv;
  if (GetParam() > 1) argv = {MPIRUN, "--oversubscribe", "-np", std::to_string(GetParam())};
  argv.insert(argv.end(), {CUSTOM_LOOP, "--checkpoint-dir", checkpoints});
  argv.insert(argv.end(), kRun.begin(), kRun.end());
  argv.insert(argv.end(), longer.begin(), longer.end());
  testing::Subprocess job(argv, testing::kMpirunEnv);
  // Once the first checkpoint is committed the loop is training.
  for (int i = 0; i < 3000 && !fs::exists(fs::path(checkpoints) / "LATEST"); ++i) {
    usleep(10 * 1000);
  }
  ASSERT_TRUE(fs::exists(fs::path(checkpoints) / "LATEST"));
  const std::vector<pid_t> ranks = GetParam() > 1
                                       ? testing::DescendantPids(job.pid(), "custom_loop")
                                       : std::vector<pid_t>{job.pid()};
  ASSERT_EQ(ranks.size(), static_cast<size_t>(GetParam()));
  kill(ranks.back(), SIGTERM);
  const ProcessResult preempted = job.Wait();
  ASSERT_EQ(preempted.exit_code, 75) << preempted.out << preempted.err;
  ASSERT_NE(preempted.out.find("preempted: checkpoint committed at step"), std::string::npos);
  const Run rerun = Train(checkpoints, {}, "12");
  ASSERT_EQ(rerun.process.exit_code, 0) << rerun.process.err;
  EXPECT_TRUE(rerun.summary["resumed_from_step"].is_number());
  ExpectSameEnd(rerun.summary, straight.summary);
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, CustomLoopTest, ::testing::Values(1, 2),
                         [](const auto& info) { return "np" + std::to_string(info.param); });

}  // namespace
}  // namespace holdfast
