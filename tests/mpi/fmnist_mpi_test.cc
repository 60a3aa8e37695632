// The example programs under a real mpirun: multi-rank training follows the
// single-rank curve, only the chief reports, ranks that disagree fail fast,
// and an aborting or failing rank ends the job instead of hanging it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/testutil/subprocess.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::CountLines;
using testing::ProcessResult;
using testing::RunProcess;

// Each program runs one OpenMP thread per rank (the machine has 2 cores)
// on a small slice of the data.
const std::vector<std::string> kSmallRun = {"--epochs",  "2", "--train-samples", "3000",
                                            "--threads", "1", "--quiet"};

// Bounds every mpirun, so that a hung job fails the test (exit 124) in
// reasonable time instead of running into the CTest timeout.
constexpr int kJobSeconds = 20;

ProcessResult Mpirun(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {TIMEOUT, "--kill-after=5", std::to_string(kJobSeconds), MPIRUN,
                                   "--oversubscribe"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunProcess(argv, {"OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"});
}

int CountOccurrences(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class FmnistMpiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("holdfast-fmnist-mpi-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  struct Run {
    ProcessResult process;
    nlohmann::json summary;
    std::string csv;
  };

  // fmnist_mlp on `np` ranks with kSmallRun, a summary and a CSV log.
  Run Train(int np) {
    const std::string tag = "np" + std::to_string(np);
    const std::string summary = (dir_ / (tag + ".json")).string();
    const std::string csv = (dir_ / (tag + ".csv")).string();
    std::vector<std::string> args = {"-np", std::to_string(np), FMNIST_MLP};
    args.insert(args.end(), kSmallRun.begin(), kSmallRun.end());
    args.insert(args.end(), {"--summary-json", summary, "--csv-log", csv});
    Run run;
    run.process = Mpirun(args);
    EXPECT_EQ(run.process.exit_code, 0) << run.process.err;
    std::ifstream in(summary);
    run.summary = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    std::ifstream log(csv);
    std::stringstream ss;
    ss << log.rdbuf();
    run.csv = ss.str();
    return run;
  }

  fs::path dir_;
};

// Measured deviation from the np=1 curve (seed 42, 3000 samples, 2 epochs,
// batch 50): epoch loss within 6e-9 relative on 2 and 4 ranks, test accuracy
// equal. 1e-5 leaves three orders of magnitude for other MPI reduction
// orders, while a lost bucket or a wrong slice moves the loss by 1e-3 or more.
constexpr double kCurveRelTolerance = 1e-5;
constexpr double kTestAccuracyTolerance = 0.01;

TEST_F(FmnistMpiTest, MoreRanksFollowTheSingleRankCurve) {
  const Run one = Train(1);
  ASSERT_TRUE(one.summary.is_object()) << one.process.err;
  EXPECT_EQ(one.summary["world_size"], 1);
  const nlohmann::json& base = one.summary["history"];
  ASSERT_EQ(base.size(), 2u);
  for (int np : {2, 4}) {
    SCOPED_TRACE("np " + std::to_string(np));
    const Run run = Train(np);
    ASSERT_TRUE(run.summary.is_object()) << run.process.err;
    const nlohmann::json& s = run.summary;
    EXPECT_EQ(s["world_size"], np);
    EXPECT_EQ(s["communicator"], "mpi");
    EXPECT_EQ(s["steps"], 2 * 60);
    const nlohmann::json& history = s["history"];
    ASSERT_EQ(history.size(), base.size());
    for (size_t e = 0; e < history.size(); ++e) {
      EXPECT_EQ(history[e]["epoch"], base[e]["epoch"]);
      EXPECT_EQ(history[e]["samples"], 3000);
      const double loss = history[e]["loss"], base_loss = base[e]["loss"];
      const double acc = history[e]["accuracy"], base_acc = base[e]["accuracy"];
      EXPECT_LE(std::abs(loss - base_loss), kCurveRelTolerance * base_loss)
          << "epoch " << e << ": " << loss << " vs " << base_loss;
      EXPECT_LE(std::abs(acc - base_acc), kCurveRelTolerance * base_acc)
          << "epoch " << e << ": " << acc << " vs " << base_acc;
    }
    EXPECT_NEAR(s["test_accuracy"].get<double>(), one.summary["test_accuracy"].get<double>(),
                kTestAccuracyTolerance);
    // Only the chief reports: one summary block on stdout, one CSV header
    // and one row per epoch (not one per rank).
    EXPECT_EQ(CountOccurrences(run.process.out, "fmnist_mlp: "), 1) << run.process.out;
    EXPECT_EQ(CountOccurrences(run.process.out, "test accuracy"), 1) << run.process.out;
    EXPECT_NE(run.process.out.find("world size " + std::to_string(np)), std::string::npos)
        << run.process.out;
    EXPECT_EQ(CountLines(run.csv), 3) << run.csv;
    EXPECT_EQ(CountOccurrences(run.csv, "epoch,"), 1) << run.csv;
  }
}

// MPMD: two ranks with different batch sizes. Both say so and exit 2, at once.
TEST(FmnistMpiMismatchTest, RanksThatDisagreeFailFastWithExit2) {
  std::vector<std::string> args = {"-np", "1", FMNIST_MLP, "--batch", "50"};
  args.insert(args.end(), kSmallRun.begin(), kSmallRun.end());
  args.insert(args.end(), {":", "-np", "1", FMNIST_MLP, "--batch", "64"});
  args.insert(args.end(), kSmallRun.begin(), kSmallRun.end());
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult r = Mpirun(args);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_EQ(CountOccurrences(r.err, "ranks disagree on the global batch size"), 2) << r.err;
  EXPECT_NE(r.err.find("rank 0 has 50"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("rank 1 has 64"), std::string::npos) << r.err;
  EXPECT_LT(seconds, 20) << "the mismatch took " << seconds << " s to report";
  EXPECT_EQ(CountOccurrences(r.out, "test accuracy"), 0) << r.out;
}

// A rank that cannot even start (its data directory is missing) must end
// the job with an error, not leave the other rank waiting for it forever.
TEST(FmnistMpiFailureTest, OneFailingRankEndsTheJob) {
  std::vector<std::string> args = {"-np", "1", FMNIST_MLP, "--data", "/nonexistent/fmnist"};
  args.insert(args.end(), kSmallRun.begin(), kSmallRun.end());
  args.insert(args.end(), {":", "-np", "1", FMNIST_MLP});
  args.insert(args.end(), kSmallRun.begin(), kSmallRun.end());
  const ProcessResult r = Mpirun(args);
  EXPECT_NE(r.exit_code, 124) << "the job hung for " << kJobSeconds << " s:\n" << r.err;
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/fmnist"), std::string::npos) << r.err;
}

TEST(ToyLinearMpiTest, RunsOnTwoRanks) {
  const ProcessResult r = Mpirun({"-np", "2", TOY_LINEAR});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("world size 2"), std::string::npos) << r.out;
  // Step losses come from the chief alone: 100 samples / batch 2.
  EXPECT_EQ(CountOccurrences(r.out, " loss "), 50 + 1) << r.out;
}

// MpiCommunicator::Abort on one rank ends every rank with its exit code.
TEST(MpiAbortTest, AbortOnOneRankEndsTheJobWithItsCode) {
  const auto start = std::chrono::steady_clock::now();
  const ProcessResult r = RunProcess(
      {TIMEOUT, "--kill-after=5", std::to_string(kJobSeconds), MPIRUN, "--oversubscribe", "-np",
       "2", MIRRORED_MPI_TEST, "--gtest_filter=MpiAbortTest.*"},
      {"HOLDFAST_TEST_ABORT=1", "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"});
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(r.exit_code, 3) << r.err;
  EXPECT_NE(r.err.find("test abort"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("passed a barrier"), std::string::npos) << r.out;
  EXPECT_LT(seconds, 20);
}

}  // namespace
}  // namespace holdfast
