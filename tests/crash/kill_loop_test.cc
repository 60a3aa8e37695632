// kill -9 at random moments: a real `mpirun -np 2 fmnist_mlp` saving every
// two steps loses one rank to SIGKILL at a random time, again and again; each
// rerun continues from whatever the kill left committed, and the run that
// finally completes must end with the weights of a run never interrupted.
// Whatever instant the kill hits — mid-step, mid-write of a shard, between
// the manifest and the rename, during the keep policy — the directory must
// hold a restorable checkpoint (or none, before the first commit).
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

TEST_F(KillLoopTest, EveryRestartAfterAKilledRankEndsBitExact) {
  const auto start = std::chrono::steady_clock::now();
  ProcessResult straight = Subprocess(Command({}), testing::kMpirunEnv).Wait();
  // The kills are drawn over the span of a whole run.
  const double run_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  const std::string expected = ReadSummary()["weights_xxh64"];
  ASSERT_FALSE(expected.empty());

  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("random seed " + std::to_string(seed));
  std::mt19937 random(seed);
  constexpr int kRounds = 5, kKillsPerRound = 3;
  int total_kills = 0;
  for (int round = 0; round < kRounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string backup = (dir_ / ("backup-" + std::to_string(round))).string();
    const std::vector<std::string> resumable = {"--backup-dir", backup, "--save-freq", "2"};
    int kills = 0;
    int64_t last_resumed_step = -1;
    for (int attempt = 0;; ++attempt) {
      ASSERT_LT(attempt, kKillsPerRound + 1) << "the run never completed";
      fs::remove(Summary());
      Subprocess job(Command(resumable), testing::kMpirunEnv);
      bool killed = false;
      std::optional<ProcessResult> done;
      if (kills < kKillsPerRound) {
        std::uniform_real_distribution<double> when(0.1 * run_seconds, 0.95 * run_seconds);
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
    total_kills += kills;
  }
  // Kills after the run ended do not count; most must have landed.
  EXPECT_GE(total_kills, kRounds) << "the kills missed the runs (a run takes " << run_seconds
                                  << " s)";
  std::printf("%d ranks killed over %d rounds (a run takes %.1f s)\n", total_kills, kRounds,
              run_seconds);
}

}  // namespace
}  // namespace holdfast
