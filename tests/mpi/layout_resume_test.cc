// Resuming on another layout (docs/layout-invariance.md): a run stopped with
// one thread count or world size and resumed with another ends with the
// weights of a run that was never stopped, bit for bit. fmnist_mlp
// interrupted with 2 threads per rank and resumed with 1; fmnist_mlp
// preempted on 3 ranks under `holdfast launch` (SIGTERM to the launcher, as a
// scheduler does: exit 75) and launched again on 2 and on 4 ranks;
// custom_loop (a CheckpointManager in a hand-written loop) stopped and rerun
// with another thread count, alone and on 2 ranks. In the default mode no
// resume warns that it cannot be bit-exact.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "tests/testutil/subprocess.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::ProcessResult;
using testing::RunProcess;
using testing::Subprocess;

// Bounds every job, so that a hung one fails the test (exit 124) instead of
// running into the CTest timeout.
constexpr int kJobSeconds = 60;
// What a resume prints under the opt-out only.
constexpr const char* kNotBitExact = "cannot be bit-exact";

// s[key], or null when s is not an object or has no such key.
nlohmann::json Get(const nlohmann::json& s, const std::string& key) {
  return s.is_object() && s.contains(key) ? s[key] : nlohmann::json();
}

// The step of the newest committed checkpoint in a backup directory (LATEST
// is "ckpt-<step>"), -1 when there is none.
int64_t LatestStep(const fs::path& backup) {
  std::ifstream in(backup / "LATEST");
  std::string name;
  if (!(in >> name) || name.rfind("ckpt-", 0) != 0) return -1;
  return std::stoll(name.substr(5));
}

class LayoutResumeTest : public ::testing::Test {
 protected:
  struct Run {
    ProcessResult process;
    nlohmann::json summary;
  };

  // `program` with `args` and a fresh summary file on `np` ranks (under
  // mpirun --oversubscribe; np 1: alone), `threads` threads each.
  Run Start(const std::string& program, int np, int threads, const std::vector<std::string>& args) {
    const std::string summary = dir_.File("summary-" + std::to_string(runs_++) + ".json");
    std::vector<std::string> argv = {TIMEOUT, "--kill-after=5", std::to_string(kJobSeconds)};
    if (np > 1) argv.insert(argv.end(), {MPIRUN, "--oversubscribe", "-np", std::to_string(np)});
    argv.insert(argv.end(),
                {program, "--threads", std::to_string(threads), "--summary-json", summary});
    argv.insert(argv.end(), args.begin(), args.end());
    Run run;
    run.process = RunProcess(argv, testing::kMpirunEnv);
    run.summary = ReadJson(summary);
    return run;
  }
  Run Fmnist(int np, int threads, std::vector<std::string> args) {
    args.insert(args.begin(), "--quiet");
    return Start(FMNIST_MLP, np, threads, args);
  }
  static nlohmann::json ReadJson(const std::string& path) {
    std::ifstream in(path);
    return in ? nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false) : nlohmann::json();
  }

  TempDir dir_;
  int runs_ = 0;
};

// ---------------------------------------------------------------------------
// fmnist_mlp: 1000 samples in global batches of 50, 20 steps per epoch, 60 in
// all; a save every 10 steps.
const std::vector<std::string> kShortRun = {"--train-samples", "1000", "--epochs", "3"};

class ThreadsResumeTest : public LayoutResumeTest, public ::testing::WithParamInterface<int> {};

// Interrupted after step 50 with 2 threads per rank (exit 1, by design), then
// resumed from ckpt-50 with 1 thread: the weights, the test figures and the
// last epoch's loss of an uninterrupted 1-thread run.
TEST_P(ThreadsResumeTest, InterruptedWithTwoThreadsResumedWithOneEndsBitExact) {
  const int np = GetParam();
  const Run straight = Fmnist(np, 1, kShortRun);
  ASSERT_EQ(straight.process.exit_code, 0) << straight.process.err;
  ASSERT_TRUE(Get(straight.summary, "weights_xxh64").is_string()) << straight.process.err;
  EXPECT_EQ(straight.summary["threads"], 1);

  const std::string backup = dir_.File("backup");
  std::vector<std::string> saving = kShortRun;
  saving.insert(saving.end(), {"--backup-dir", backup, "--save-freq", "10"});
  std::vector<std::string> interrupted = saving;
  interrupted.insert(interrupted.end(), {"--interrupt-at-step", "50"});
  const Run broken = Fmnist(np, 2, interrupted);
  ASSERT_EQ(broken.process.exit_code, 1) << broken.process.err;
  EXPECT_NE(broken.process.err.find("interrupted after step 50"), std::string::npos)
      << broken.process.err;
  ASSERT_EQ(LatestStep(backup), 50);

  const Run resumed = Fmnist(np, 1, saving);
  ASSERT_EQ(resumed.process.exit_code, 0) << resumed.process.err;
  const nlohmann::json& s = resumed.summary;
  ASSERT_TRUE(Get(s, "resumed_from").is_object()) << s.dump() << resumed.process.err;
  EXPECT_EQ(s["resumed_from"]["step"], 50);
  EXPECT_EQ(s["steps"], 60);
  EXPECT_EQ(s["threads"], 1);
  EXPECT_EQ(s["world_size"], np);
  EXPECT_EQ(s["layout_invariant"], true);
  EXPECT_EQ(s["weights_xxh64"], straight.summary["weights_xxh64"])
      << "resumed " << s["weights_xxh64"] << ", uninterrupted "
      << straight.summary["weights_xxh64"];
  EXPECT_EQ(s["test_accuracy"], straight.summary["test_accuracy"]);
  EXPECT_EQ(s["test_loss"], straight.summary["test_loss"]);
  EXPECT_EQ(s["final_train_loss"], straight.summary["final_train_loss"]);
  EXPECT_EQ(resumed.process.err.find(kNotBitExact), std::string::npos) << resumed.process.err;
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, ThreadsResumeTest, ::testing::Values(1, 2),
                         [](const auto& info) { return "np" + std::to_string(info.param); });

// ---------------------------------------------------------------------------
// Preempted on 3 ranks, resumed on 2 and on 4. 4000 samples in global batches
// of 50: 80 steps per epoch, 240 in all (~1 s of training on 3 ranks); a
// save every 20 steps.
const std::vector<std::string> kLongRun = {"--train-samples", "4000", "--epochs", "3",
                                           "--save-freq",     "20"};
constexpr int64_t kLongSteps = 240;

class WorldSizeResumeTest : public LayoutResumeTest {
 protected:
  // `holdfast launch LAUNCH_ARGS -- fmnist_mlp ...` with kLongRun, 1 thread
  // per rank, a backup directory and the summary file Summary(). Not under
  // `timeout`, which would pass the test's SIGTERM on to its whole process
  // group; WaitFor bounds the jobs instead.
  std::vector<std::string> Launch(const std::vector<std::string>& launch_args,
                                  const std::string& backup) const {
    std::vector<std::string> argv = {HOLDFAST_BINARY, "launch"};
    argv.insert(argv.end(), launch_args.begin(), launch_args.end());
    argv.insert(argv.end(), {"--", FMNIST_MLP, "--quiet", "--threads", "1", "--summary-json",
                             Summary(), "--backup-dir", backup});
    argv.insert(argv.end(), kLongRun.begin(), kLongRun.end());
    return argv;
  }
  std::string Summary() const { return dir_.File("launched.json"); }
};

TEST_F(WorldSizeResumeTest, PreemptedOnThreeRanksResumedOnTwoOrFourEndsBitExact) {
  const Run one = Fmnist(1, 1, kLongRun);
  ASSERT_EQ(one.process.exit_code, 0) << one.process.err;
  const Run three = Fmnist(3, 1, kLongRun);
  ASSERT_EQ(three.process.exit_code, 0) << three.process.err;
  ASSERT_TRUE(Get(three.summary, "weights_xxh64").is_string()) << three.process.err;
  EXPECT_EQ(three.summary["world_size"], 3);
  EXPECT_EQ(three.summary["steps"], kLongSteps);
  const nlohmann::json expected = three.summary;
  EXPECT_EQ(one.summary["weights_xxh64"], expected["weights_xxh64"])
      << "uninterrupted: np 1 " << one.summary["weights_xxh64"] << ", np 3 "
      << expected["weights_xxh64"];

  // Preempted: SIGTERM to the launcher once ckpt-20 is committed; every rank
  // saves at one step and the launcher exits 75 without restarting.
  const fs::path backup = dir_.File("backup");
  Subprocess job(Launch({"-np", "3"}, backup.string()), testing::kMpirunEnv);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(kJobSeconds);
  while (!fs::exists(backup / "ckpt-20" / "MANIFEST.json") && job.running() &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(fs::exists(backup / "ckpt-20" / "MANIFEST.json")) << job.err();
  job.Signal(SIGTERM);
  const std::optional<ProcessResult> ended = job.WaitFor(kJobSeconds);
  ASSERT_TRUE(ended.has_value()) << "the job did not end within " << kJobSeconds
                                 << " s of SIGTERM:\n"
                                 << job.err();
  const ProcessResult& preempted = *ended;
  ASSERT_EQ(preempted.exit_code, 75) << preempted.out << preempted.err;
  EXPECT_NE(preempted.err.find("stopped by a signal, not restarting"), std::string::npos)
      << preempted.err;
  const int64_t step = LatestStep(backup);
  ASSERT_GE(step, 20);
  ASSERT_LT(step, kLongSteps);
  EXPECT_NE(preempted.out.find("preempted: checkpoint committed at step " + std::to_string(step)),
            std::string::npos)
      << preempted.out;
  const fs::path checkpoint = backup / ("ckpt-" + std::to_string(step));
  for (int r = 0; r < 3; ++r) {
    const std::string shard = "shard-" + std::to_string(r) + "-of-3.bin";
    EXPECT_TRUE(fs::exists(checkpoint / shard)) << shard;
  }
  // The resumed run deletes its backup when it finishes: one copy per resume.
  const fs::path backup4 = dir_.File("backup-4");
  fs::copy(backup, backup4, fs::copy_options::recursive);

  for (const auto& [np, from] : std::vector<std::pair<int, fs::path>>{{2, backup}, {4, backup4}}) {
    SCOPED_TRACE("resumed on " + std::to_string(np) + " ranks");
    fs::remove(Summary());
    Subprocess resume(Launch({"-np", std::to_string(np), "--max-restarts", "0"}, from.string()),
                      testing::kMpirunEnv);
    const std::optional<ProcessResult> done = resume.WaitFor(kJobSeconds);
    ASSERT_TRUE(done.has_value()) << "the resumed job did not end within " << kJobSeconds << " s:\n"
                                  << resume.err();
    const ProcessResult& r = *done;
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_NE(r.err.find("resumed from step " + std::to_string(step)), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find(kNotBitExact), std::string::npos) << r.err;
    const nlohmann::json s = ReadJson(Summary());
    ASSERT_TRUE(Get(s, "resumed_from").is_object()) << s.dump() << r.err;
    EXPECT_EQ(s["resumed_from"]["step"], step);
    EXPECT_EQ(s["world_size"], np);
    EXPECT_EQ(s["steps"], kLongSteps);
    EXPECT_EQ(s["weights_xxh64"], expected["weights_xxh64"])
        << "preempted at step " << step << " on 3 ranks, resumed on " << np << ": "
        << s["weights_xxh64"] << "; uninterrupted on 3 ranks: " << expected["weights_xxh64"];
    EXPECT_EQ(s["test_accuracy"], expected["test_accuracy"]);
    EXPECT_EQ(s["test_loss"], expected["test_loss"]);
    EXPECT_EQ(s["final_train_loss"], expected["final_train_loss"]);
  }
}

// ---------------------------------------------------------------------------
// custom_loop: 1000 samples in global batches of 50, 20 steps per epoch, 60
// in all; a save every 7 steps (max_to_keep 2).
class CustomLoopThreadsTest : public LayoutResumeTest, public ::testing::WithParamInterface<int> {
 protected:
  Run CustomLoop(int threads, const std::string& checkpoints,
                 const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {
        "--checkpoint-dir",      checkpoints, "--train-samples", "1000",
        "--checkpoint-interval", "7",         "--epochs",        "3"};
    args.insert(args.end(), extra.begin(), extra.end());
    return Start(CUSTOM_LOOP, GetParam(), threads, args);
  }
};

// Stopped at step 30 with 2 threads and rerun with 1 (from ckpt-28), and
// stopped at 45 with 1 and rerun with 2 (from ckpt-42): both end with the
// weights of a 1-thread run that never stopped.
TEST_P(CustomLoopThreadsTest, StoppedAndRerunWithOtherThreadsEndsBitExact) {
  const Run straight = CustomLoop(1, dir_.File("straight"));
  ASSERT_EQ(straight.process.exit_code, 0) << straight.process.err;
  ASSERT_TRUE(Get(straight.summary, "weights_xxh64").is_string()) << straight.process.err;
  EXPECT_EQ(straight.summary["steps"], 60);
  EXPECT_EQ(straight.summary["threads"], 1);
  EXPECT_EQ(straight.summary["world_size"], GetParam());

  struct Case {
    int stop, stopped_threads, rerun_threads;
  };
  for (const Case& c : {Case{30, 2, 1}, Case{45, 1, 2}}) {
    SCOPED_TRACE("stopped at step " + std::to_string(c.stop) + " with " +
                 std::to_string(c.stopped_threads) + " thread(s), rerun with " +
                 std::to_string(c.rerun_threads));
    const std::string checkpoints = dir_.File("stopped-" + std::to_string(c.stop));
    const Run stopped =
        CustomLoop(c.stopped_threads, checkpoints, {"--stop-at-step", std::to_string(c.stop)});
    ASSERT_EQ(stopped.process.exit_code, 1) << stopped.process.err;
    const Run rerun = CustomLoop(c.rerun_threads, checkpoints);
    ASSERT_EQ(rerun.process.exit_code, 0) << rerun.process.err;
    const nlohmann::json& s = rerun.summary;
    const int saved = c.stop / 7 * 7;
    EXPECT_EQ(Get(s, "resumed_from_step"), saved) << s.dump();
    EXPECT_EQ(s["steps_run"], 60 - saved);
    EXPECT_EQ(s["threads"], c.rerun_threads);
    EXPECT_EQ(s["layout_invariant"], true);
    EXPECT_EQ(s["weights_xxh64"], straight.summary["weights_xxh64"])
        << "rerun " << s["weights_xxh64"] << ", never stopped "
        << straight.summary["weights_xxh64"];
    EXPECT_EQ(s["ema_xxh64"], straight.summary["ema_xxh64"]);
    EXPECT_EQ(s["learning_rate"], straight.summary["learning_rate"]);
    EXPECT_EQ(rerun.process.err.find(kNotBitExact), std::string::npos) << rerun.process.err;
  }
}

INSTANTIATE_TEST_SUITE_P(WorldSizes, CustomLoopThreadsTest, ::testing::Values(1, 2),
                         [](const auto& info) { return "np" + std::to_string(info.param); });

}  // namespace
}  // namespace holdfast
