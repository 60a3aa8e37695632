// kill -9 at random moments: a real `mpirun -np 2 fmnist_mlp` saving every
// two steps loses one rank to SIGKILL at a random time, again and again; each
// rerun continues from whatever the kill left committed, and the run that
// finally completes must end with the weights of a run never interrupted.
// Whatever instant the kill hits — mid-step, mid-write of a shard, between
// the manifest and the rename, during the keep policy — the directory must
// hold a restorable checkpoint (or none, before the first commit).
// Every other round saves asynchronously (--async-checkpoint, every three
// steps: a save is nearly always in flight), so kills also land while a
// background writer writes a shard or the chief commits behind training.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/testutil/subprocess.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::DescendantPids;
using testing::ProcessResult;
using testing::Subprocess;

// 1000 samples, batch 50: 20 steps per epoch, 60 steps, a save every 2.
const std::vector<std::string> kTraining = {"--train-samples", "1000",     "--threads", "1",
                                            "--quiet",         "--epochs", "3"};

class KillLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("holdfast-kill-loop-" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> Command(const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {MPIRUN,     "--oversubscribe", "-np",    "2",
                                     FMNIST_MLP, "--summary-json",  Summary()};
    argv.insert(argv.end(), kTraining.begin(), kTraining.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }
  std::string Summary() const { return (dir_ / "summary.json").string(); }
  nlohmann::json ReadSummary() const {
    std::ifstream in(Summary());
    return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  }

  fs::path dir_;
};

// The options of a resumable run into `backup`: sync, a save every two
// steps; async, every three (a save takes a few steps to resolve).
std::vector<std::string> Resumable(const std::string& backup, bool async) {
  std::vector<std::string> argv = {"--backup-dir", backup, "--save-freq", async ? "3" : "2"};
  if (async) argv.push_back("--async-checkpoint");
  return argv;
}

TEST_F(KillLoopTest, EveryRestartAfterAKilledRankEndsBitExact) {
  auto start = std::chrono::steady_clock::now();
  ProcessResult straight = Subprocess(Command({}), testing::kMpirunEnv).Wait();
  // The kills are drawn over the span of a whole run, of each mode.
  double run_seconds[2] = {
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 0};
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  const std::string expected = ReadSummary()["weights_xxh64"];
  ASSERT_FALSE(expected.empty());

  // Saving asynchronously, uninterrupted, does not change training: the
  // same weights, every save committed (60 steps / 3).
  fs::remove(Summary());
  start = std::chrono::steady_clock::now();
  const ProcessResult async_straight =
      Subprocess(Command(Resumable((dir_ / "backup-async").string(), true)), testing::kMpirunEnv)
          .Wait();
  run_seconds[1] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(async_straight.exit_code, 0) << async_straight.err;
  const nlohmann::json async_summary = ReadSummary();
  ASSERT_EQ(async_summary["weights_xxh64"], expected) << "async checkpoints changed training";
  EXPECT_EQ(async_summary["checkpoints_committed"], 20) << async_summary.dump();
  EXPECT_EQ(async_summary["checkpoints_failed"], 0) << async_summary.dump();

  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("random seed " + std::to_string(seed));
  std::mt19937 random(seed);
  // Rounds alternate sync and async.
  constexpr int kRounds = 6, kKillsPerRound = 3;
  int total_kills[2] = {0, 0};
  for (int round = 0; round < kRounds; ++round) {
    const bool async = round % 2 == 1;
    SCOPED_TRACE("round " + std::to_string(round) + (async ? " (async)" : " (sync)"));
    const std::string backup = (dir_ / ("backup-" + std::to_string(round))).string();
    const std::vector<std::string> resumable = Resumable(backup, async);
    int kills = 0;
    int64_t last_resumed_step = -1;
    for (int attempt = 0;; ++attempt) {
      ASSERT_LT(attempt, kKillsPerRound + 1) << "the run never completed";
      fs::remove(Summary());
      Subprocess job(Command(resumable), testing::kMpirunEnv);
      bool killed = false;
      std::optional<ProcessResult> done;
      if (kills < kKillsPerRound) {
        // Up to 80% of a whole run: a run's length varies by 10-20% on a
        // busy 2-core machine, and a kill drawn past the end misses.
        std::uniform_real_distribution<double> when(0.1 * run_seconds[async],
                                                    0.8 * run_seconds[async]);
        done = job.WaitFor(when(random));
        if (!done) {
          const std::vector<pid_t> ranks = DescendantPids(job.pid(), "fmnist_mlp");
          if (!ranks.empty()) {
            const pid_t victim =
                ranks[std::uniform_int_distribution<size_t>(0, ranks.size() - 1)(random)];
            kill(victim, SIGKILL);
            ++kills;
            killed = true;
          }
        }
      }
      if (!done) done = job.WaitFor(60);
      ASSERT_TRUE(done.has_value()) << "mpirun did not end within 60 s of the kill";
      if (done->exit_code == 0) {
        const nlohmann::json summary = ReadSummary();
        EXPECT_EQ(summary["steps"], 60);
        EXPECT_EQ(summary["weights_xxh64"], expected)
            << "after " << kills << " kills; last resumed at step " << last_resumed_step;
        if (kills > 0 && summary["resumed_from"].is_object()) {
          EXPECT_GE(summary["resumed_from"]["step"].get<int64_t>(), last_resumed_step);
        }
        break;
      }
      ASSERT_TRUE(killed) << "a run nobody killed failed (exit " << done->exit_code << "):\n"
                          << done->out << done->err;
      // A killed job: whatever it left must restore. A rerun that refused the
      // directory (damaged, foreign) exits 1 or 2 with a message naming it,
      // before any training — caught here because it would loop forever.
      ASSERT_EQ(done->err.find("no usable checkpoint"), std::string::npos) << done->err;
      ASSERT_EQ(done->err.find("written for another"), std::string::npos) << done->err;
      const std::string resumed = "resuming from step ";
      const size_t at = done->out.rfind(resumed);
      if (at != std::string::npos) {
        const int64_t step = std::stoll(done->out.substr(at + resumed.size()));
        EXPECT_GE(step, last_resumed_step) << "a restart went back past a committed step";
        last_resumed_step = step;
      }
    }
    total_kills[async] += kills;
  }
  // Kills after the run ended do not count; most must have landed, in
  // either mode.
  for (int async = 0; async < 2; ++async) {
    EXPECT_GE(total_kills[async], kRounds / 2)
        << "the kills missed the " << (async ? "async" : "sync") << " runs (a run takes "
        << run_seconds[async] << " s)";
  }
  std::printf(
      "%d + %d ranks killed over %d sync + %d async rounds (a run takes %.1f s, %.1f s async)\n",
      total_kills[0], total_kills[1], kRounds - kRounds / 2, kRounds / 2, run_seconds[0],
      run_seconds[1]);
}

}  // namespace
}  // namespace holdfast
