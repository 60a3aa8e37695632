// Preemption end to end with real signals under a real mpirun: SIGTERM to
// one rank, to every rank at once, or SIGUSR1 to mpirun (which forwards it),
// at random moments. The job must exit 75 with checkpoint s committed by
// every rank (all their shards, LATEST naming it), and a rerun must finish
// with the weights (and the per-step loss log) of a run that was never
// preempted.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "tests/testutil/subprocess.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::DescendantPids;
using testing::ProcessResult;
using testing::Subprocess;

// 4000 samples, batch 50: 80 steps per epoch, 240 in all; a save every 25.
const std::vector<std::string> kTraining = {
    "--train-samples", "4000", "--threads", "1", "--quiet", "--epochs", "3", "--save-freq", "25"};
constexpr int kSteps = 240;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

enum class Target { kOneRank, kEveryRank, kMpirun };

struct Case {
  int np;
  Target target;
  int signal;
};

std::string Name(const Case& c) {
  const char* target = c.target == Target::kOneRank     ? "OneRank"
                       : c.target == Target::kEveryRank ? "EveryRank"
                                                        : "Mpirun";
  return std::string(c.signal == SIGTERM ? "Term" : "Usr1") + "To" + target + "Np" +
         std::to_string(c.np);
}

class PreemptionMpiTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("holdfast-preempt-" + std::to_string(getpid()) + "-" + Name(GetParam()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<std::string> Command(const std::vector<std::string>& extra) const {
    std::vector<std::string> argv = {
        MPIRUN,     "--oversubscribe", "-np",    std::to_string(GetParam().np),
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
  void Send(Subprocess& job, std::mt19937& random) const {
    const Case& c = GetParam();
    if (c.target == Target::kMpirun) {
      job.Signal(c.signal);
      return;
    }
    std::vector<pid_t> ranks = DescendantPids(job.pid(), "fmnist_mlp");
    if (c.target == Target::kOneRank && !ranks.empty()) {
      ranks = {ranks[std::uniform_int_distribution<size_t>(0, ranks.size() - 1)(random)]};
    }
    for (pid_t rank : ranks) kill(rank, c.signal);
  }

  fs::path dir_;
};

TEST_P(PreemptionMpiTest, EveryRankSavesTheSameStepExits75AndTheRerunIsBitExact) {
  const Case& c = GetParam();
  const auto start = std::chrono::steady_clock::now();
  const std::string straight_log = (dir_ / "straight-loss.csv").string();
  const ProcessResult straight =
      Subprocess(Command({"--batch-log", straight_log}), testing::kMpirunEnv).Wait();
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  const double run_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const std::string expected = ReadSummary()["weights_xxh64"];

  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("random seed " + std::to_string(seed));
  std::mt19937 random(seed);
  int preemptions = 0;
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const std::string backup = (dir_ / ("backup-" + std::to_string(round))).string();
    const std::string log = (dir_ / ("loss-" + std::to_string(round) + ".csv")).string();
    Subprocess job(Command({"--backup-dir", backup, "--batch-log", log}), testing::kMpirunEnv);
    // Past start-up (MPI, data), before the end.
    std::optional<ProcessResult> done =
        job.WaitFor(std::uniform_real_distribution<double>(0.4, 0.8)(random) * run_seconds);
    if (done) continue;  // finished first: nothing to test this round
    Send(job, random);
    done = job.WaitFor(60);
    ASSERT_TRUE(done.has_value()) << "the job did not end within 60 s of the signal";
    if (done->exit_code == 0) continue;  // the signal came after the last step
    ASSERT_EQ(done->exit_code, 75) << done->out << done->err;
    ++preemptions;

    // One step, committed by every rank.
    const std::string said = "preempted: checkpoint committed at step ";
    const size_t at = done->out.find(said);
    ASSERT_NE(at, std::string::npos) << done->out;
    const int64_t step = std::stoll(done->out.substr(at + said.size()));
    ASSERT_GT(step, 0);
    ASSERT_LT(step, kSteps);
    const fs::path checkpoint = fs::path(backup) / ("ckpt-" + std::to_string(step));
    EXPECT_TRUE(fs::exists(checkpoint / "MANIFEST.json"));
    for (int r = 0; r < c.np; ++r) {
      const std::string shard =
          "shard-" + std::to_string(r) + "-of-" + std::to_string(c.np) + ".bin";
      EXPECT_TRUE(fs::exists(checkpoint / shard)) << shard;
    }
    std::ifstream latest(fs::path(backup) / "LATEST");
    std::string name;
    latest >> name;
    EXPECT_EQ(name, checkpoint.filename().string());

    fs::remove(Summary());
    const ProcessResult rerun =
        Subprocess(Command({"--backup-dir", backup, "--batch-log", log}), testing::kMpirunEnv)
            .Wait();
    ASSERT_EQ(rerun.exit_code, 0) << rerun.err;
    const nlohmann::json summary = ReadSummary();
    EXPECT_EQ(summary["resumed_from"]["step"], step);
    EXPECT_EQ(summary["steps"], kSteps);
    EXPECT_EQ(summary["weights_xxh64"], expected);
    // The batch log went on after the preempted step: the loss of every
    // step, as the run never stopped.
    EXPECT_EQ(ReadAll(log), ReadAll(straight_log));
  }
  EXPECT_GT(preemptions, 0) << "every signal missed the run (" << run_seconds << " s)";
}

INSTANTIATE_TEST_SUITE_P(Signals, PreemptionMpiTest,
                         ::testing::Values(Case{2, Target::kOneRank, SIGTERM},
                                           Case{3, Target::kOneRank, SIGTERM},
                                           Case{3, Target::kEveryRank, SIGTERM},
                                           Case{2, Target::kOneRank, SIGUSR1},
                                           Case{3, Target::kMpirun, SIGUSR1}),
                         [](const auto& info) { return Name(info.param); });

}  // namespace
}  // namespace holdfast
