// `holdfast launch` with real processes: its restart policy (75 and failures
// restart, 2 stops, K restarts then the last code), preemption of one rank
// and of the launcher itself, and the hang watchdog: a SIGSTOPped rank ends
// the attempt within the watchdog time and the restarted job finishes with
// the weights of a run never disturbed.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "tests/testutil/subprocess.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::CountLines;
using testing::DescendantPids;
using testing::ProcessResult;
using testing::Subprocess;

using Clock = std::chrono::steady_clock;

const std::vector<std::string> kEnv = {"OMP_NUM_THREADS=1"};
// 4000 samples, batch 50: 80 steps per epoch, 240 in all; a save every 25.
const std::vector<std::string> kTraining = {
    "--train-samples", "4000", "--threads", "1", "--quiet", "--epochs", "3", "--save-freq", "25"};

class LaunchTest : public ::testing::Test {
 protected:
  std::vector<std::string> Launch(const std::vector<std::string>& launch_args,
                                  const std::vector<std::string>& program) const {
    std::vector<std::string> argv = {HOLDFAST_BINARY, "launch"};
    argv.insert(argv.end(), launch_args.begin(), launch_args.end());
    argv.push_back("--");
    argv.insert(argv.end(), program.begin(), program.end());
    return argv;
  }
  std::vector<std::string> Fmnist(const std::vector<std::string>& extra) const {
    std::vector<std::string> argv = {FMNIST_MLP, "--summary-json", Summary()};
    argv.insert(argv.end(), kTraining.begin(), kTraining.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }
  std::string Summary() const { return dir_.File("summary.json"); }
  std::string Backup() const { return dir_.File("backup"); }
  nlohmann::json ReadSummary() const {
    std::ifstream in(Summary());
    return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  }
  // The uninterrupted run's weights, on 2 ranks.
  std::string Expected() {
    const ProcessResult r = Subprocess(Launch({"-np", "2"}, Fmnist({})), kEnv).Wait();
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return ReadSummary()["weights_xxh64"];
  }
  // Waits until the job's ranks are training (the first checkpoint exists).
  static bool WaitForFile(const fs::path& file, double seconds) {
    const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
    while (Clock::now() < deadline) {
      if (fs::exists(file)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }
  // Lines of the launcher's stderr that report attempts.
  static std::vector<std::string> Attempts(const std::string& err) {
    std::vector<std::string> out;
    std::istringstream in(err);
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("holdfast launch: attempt ", 0) == 0) out.push_back(line);
    }
    return out;
  }

  TempDir dir_;
};

TEST_F(LaunchTest, UsageErrorStopsAtOnceWithCode2) {
  const ProcessResult r =
      Subprocess(Launch({"--max-restarts", "5"}, {FMNIST_MLP, "--data", "/nope"}), kEnv).Wait();
  EXPECT_EQ(r.exit_code, 2) << r.err;
  const auto attempts = Attempts(r.err);
  ASSERT_EQ(attempts.size(), 1u) << r.err;
  EXPECT_NE(attempts[0].find("usage or bad input (exit 2)"), std::string::npos) << attempts[0];
}

TEST_F(LaunchTest, FailuresRestartUntilTheLimitThenEndWithTheLastCode) {
  const ProcessResult r =
      Subprocess(Launch({"--no-mpi", "--max-restarts", "2", "--restart-delay", "0"},
                        {"/bin/sh", "-c", "exit 3"}),
                 kEnv)
          .Wait();
  EXPECT_EQ(r.exit_code, 3) << r.err;
  const auto attempts = Attempts(r.err);
  ASSERT_EQ(attempts.size(), 3u) << r.err;
  EXPECT_NE(attempts[0].find("attempt 1 of at most 3: failed (exit 3)"), std::string::npos);
  EXPECT_NE(attempts[0].find("restarting"), std::string::npos);
  EXPECT_NE(attempts[2].find("no restarts left"), std::string::npos) << attempts[2];
}

TEST_F(LaunchTest, MissingProgramIsAUsageError) {
  const ProcessResult r = Subprocess(Launch({"--no-mpi"}, {"/no/such/program"}), kEnv).Wait();
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("cannot run /no/such/program"), std::string::npos) << r.err;
}

// A rank is preempted (exit 75): the launcher restarts the job, which
// resumes at the committed step and ends bit-exact.
TEST_F(LaunchTest, APreemptedRankRestartsTheJobWhichEndsBitExact) {
  const std::string expected = Expected();
  fs::remove(Summary());
  Subprocess job(Launch({"-np", "2", "--restart-delay", "0"}, Fmnist({"--backup-dir", Backup()})),
                 kEnv);
  ASSERT_TRUE(WaitForFile(fs::path(Backup()) / "ckpt-25" / "MANIFEST.json", 60));
  const std::vector<pid_t> ranks = DescendantPids(job.pid(), "fmnist_mlp");
  ASSERT_EQ(ranks.size(), 2u);
  kill(ranks[1], SIGTERM);
  const std::optional<ProcessResult> r = job.WaitFor(120);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->exit_code, 0) << r->err;
  const auto attempts = Attempts(r->err);
  ASSERT_EQ(attempts.size(), 2u) << r->err;
  EXPECT_NE(attempts[0].find("preempted (exit 75)"), std::string::npos) << attempts[0];
  EXPECT_NE(attempts[0].find("restarting"), std::string::npos) << attempts[0];
  std::smatch m;
  ASSERT_TRUE(std::regex_search(attempts[1], m, std::regex("resumed from step (\\d+)")))
      << attempts[1];
  const nlohmann::json summary = ReadSummary();
  EXPECT_EQ(summary["resumed_from"]["step"], std::stoi(m[1]));
  EXPECT_EQ(summary["weights_xxh64"], expected);
}

// The launcher itself is signalled (as by a scheduler): every rank saves,
// the launcher exits 75 without restarting, and a new launch ends bit-exact.
TEST_F(LaunchTest, ASignalledLauncherExits75ForTheSchedulerAndTheRelaunchIsBitExact) {
  const std::string expected = Expected();
  fs::remove(Summary());
  Subprocess job(Launch({"-np", "2"}, Fmnist({"--backup-dir", Backup()})), kEnv);
  ASSERT_TRUE(WaitForFile(fs::path(Backup()) / "ckpt-25" / "MANIFEST.json", 60));
  job.Signal(SIGTERM);
  const std::optional<ProcessResult> r = job.WaitFor(60);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->exit_code, 75) << r->err;
  const auto attempts = Attempts(r->err);
  ASSERT_EQ(attempts.size(), 1u) << r->err;
  EXPECT_NE(attempts[0].find("not restarting"), std::string::npos) << attempts[0];

  const ProcessResult again =
      Subprocess(Launch({"-np", "2"}, Fmnist({"--backup-dir", Backup()})), kEnv).Wait();
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(ReadSummary()["resumed_from"].is_object());
  EXPECT_EQ(ReadSummary()["weights_xxh64"], expected);
}

// A frozen rank (SIGSTOP): the other rank's watchdog ends the attempt within
// the watchdog time plus a margin; the launcher restarts from the last
// checkpoint and the job ends bit-exact.
TEST_F(LaunchTest, AFrozenRankIsCaughtByTheWatchdogAndTheRestartEndsBitExact) {
  const std::string expected = Expected();
  fs::remove(Summary());
  constexpr double kWatchdog = 3;
  Subprocess job(Launch({"-np", "2", "--restart-delay", "0"},
                        Fmnist({"--backup-dir", Backup(), "--watchdog-seconds", "3"})),
                 kEnv);
  ASSERT_TRUE(WaitForFile(fs::path(Backup()) / "ckpt-25" / "MANIFEST.json", 60));
  const std::vector<pid_t> ranks = DescendantPids(job.pid(), "fmnist_mlp");
  ASSERT_EQ(ranks.size(), 2u);
  const auto frozen_at = Clock::now();
  kill(ranks[1], SIGSTOP);
  // The first attempt must end within the watchdog time plus a margin.
  double ended_after = -1;
  while (std::chrono::duration<double>(Clock::now() - frozen_at).count() < 60) {
    if (Attempts(job.err()).size() >= 1) {
      ended_after = std::chrono::duration<double>(Clock::now() - frozen_at).count();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ASSERT_GT(ended_after, 0) << "the frozen job never ended:\n" << job.err();
  EXPECT_LT(ended_after, kWatchdog + 10) << job.err();
  const std::optional<ProcessResult> r = job.WaitFor(120);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->exit_code, 0) << r->err;
  EXPECT_NE(r->err.find("(watchdog)"), std::string::npos) << r->err;
  EXPECT_NE(r->err.find("no progress for"), std::string::npos) << r->err;
  const auto attempts = Attempts(r->err);
  ASSERT_EQ(attempts.size(), 2u) << r->err;
  EXPECT_NE(attempts[0].find("failed (exit 1)"), std::string::npos) << attempts[0];
  EXPECT_NE(attempts[1].find("resumed from step"), std::string::npos) << attempts[1];
  EXPECT_EQ(ReadSummary()["weights_xxh64"], expected);
  std::printf("frozen rank: attempt ended %.1f s after SIGSTOP (watchdog %.0f s)\n", ended_after,
              kWatchdog);
}

}  // namespace
}  // namespace holdfast
