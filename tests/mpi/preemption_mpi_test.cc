// Preemption end to end with real signals under a real mpirun: SIGTERM to
// one rank, to every rank at once, or SIGUSR1 to mpirun (which forwards it),
// at a random step of training. The job must exit 75 with checkpoint s committed by
// every rank (all their shards, LATEST naming it), and a rerun must finish
// with the weights (and the per-step loss log) of a run that was never
// preempted; the manifest and `holdfast ckpt ls` must show that step,
// verified, and nothing half done. The async case (--async-checkpoint, a
// save every 2 steps: one is in flight at every step where the ranks can
// agree to stop) also checks each rank's own exit code and that the save in
// flight was committed too.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <ostream>
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

// 4000 samples, batch 50: 80 steps per epoch, 240 in all; a save every 25
// (async: every 2).
const std::vector<std::string> kTraining = {"--train-samples", "4000",     "--threads", "1",
                                            "--quiet",         "--epochs", "3"};
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
  bool async = false;
};

std::string Name(const Case& c) {
  const char* target = c.target == Target::kOneRank     ? "OneRank"
                       : c.target == Target::kEveryRank ? "EveryRank"
                                                        : "Mpirun";
  return std::string(c.signal == SIGTERM ? "Term" : "Usr1") + "To" + target + "Np" +
         std::to_string(c.np) + (c.async ? "Async" : "");
}
// For test names (CTest lists the parameter): the name, not the raw bytes.
void PrintTo(const Case& c, std::ostream* os) { *os << Name(c); }

class PreemptionMpiTest : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("holdfast-preempt-" + std::to_string(getpid()) + "-" + Name(GetParam()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // With `exits`: every rank runs under a shell that leaves the rank's own
  // exit code in exits/rank-<r> (see RankExitCodes), and mpirun lets every
  // rank end by itself rather than killing the rest when one exits non-zero.
  std::vector<std::string> Command(const std::vector<std::string>& extra,
                                   const std::string& exits = "") const {
    const Case& c = GetParam();
    std::vector<std::string> argv = {MPIRUN, "--oversubscribe", "-np", std::to_string(c.np)};
    if (!exits.empty()) {
      argv.insert(argv.end(), {"--mca", "orte_abort_on_non_zero_status", "0", "/bin/sh", "-c",
                               "\"$0\" \"$@\"; code=$?; echo $code > \"" + exits +
                                   "/rank-$OMPI_COMM_WORLD_RANK\"; exit $code"});
    }
    argv.insert(argv.end(), {FMNIST_MLP, "--summary-json", Summary()});
    argv.insert(argv.end(), kTraining.begin(), kTraining.end());
    argv.insert(argv.end(), {"--save-freq", c.async ? "2" : "25"});
    // Async keeps two checkpoints, to see which save was in flight.
    if (c.async) argv.insert(argv.end(), {"--async-checkpoint", "--double-checkpoint"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }
  // Each rank's exit code, from a job run with Command(..., exits); -1 for
  // a rank that left none.
  std::vector<int> RankExitCodes(const std::string& exits) const {
    std::vector<int> codes;
    for (int r = 0; r < GetParam().np; ++r) {
      std::ifstream in(fs::path(exits) / ("rank-" + std::to_string(r)));
      int code = -1;
      in >> code;
      codes.push_back(code);
    }
    return codes;
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
    std::string exits;
    if (c.async) {
      exits = (dir_ / ("exits-" + std::to_string(round))).string();
      fs::create_directories(exits);
    }
    Subprocess job(Command({"--backup-dir", backup, "--batch-log", log}, exits),
                   testing::kMpirunEnv);
    // Mid-training, at a random step: once the batch log (rank 0 writes and
    // flushes a row per step) shows it. A time drawn from the start would
    // often land in start-up (MPI, data: step 1, before any save) or, on a
    // busy machine, after the end.
    const int target = std::uniform_int_distribution<int>(10, 200)(random);
    std::optional<ProcessResult> done;
    for (int i = 0; i < 6000 && !(done = job.WaitFor(0.01)); ++i) {
      if (testing::CountLines(ReadAll(log)) > target) break;  // a header, then a row per step
    }
    if (done) continue;  // finished first: nothing to test this round
    Send(job, random);
    done = job.WaitFor(60);
    ASSERT_TRUE(done.has_value()) << "the job did not end within 60 s of the signal";
    int exit_code = done->exit_code;
    if (c.async) {
      // Each rank's own exit code: every one stopped (or finished) by itself.
      const std::vector<int> codes = RankExitCodes(exits);
      ASSERT_EQ(codes, std::vector<int>(c.np, codes[0])) << done->out << done->err;
      exit_code = codes[0];
    }
    if (exit_code == 0) continue;  // the signal came after the last step
    ASSERT_EQ(exit_code, 75) << done->out << done->err;
    ++preemptions;

    // One step, committed by every rank.
    const std::string said = "preempted: checkpoint committed at step ";
    const size_t at = done->out.find(said);
    ASSERT_NE(at, std::string::npos) << done->out;
    const int64_t step = std::stoll(done->out.substr(at + said.size()));
    ASSERT_GT(step, 0);
    ASSERT_LT(step, kSteps);
    std::printf("round %d: preempted, every rank stopped at step %lld\n", round,
                static_cast<long long>(step));
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
    std::ifstream manifest(checkpoint / "MANIFEST.json");
    const nlohmann::json committed =
        nlohmann::json::parse(manifest, nullptr, /*allow_exceptions=*/false);
    EXPECT_EQ(committed["step"], step) << committed.dump();
    EXPECT_EQ(committed["world_size"], c.np) << committed.dump();
    // As `holdfast ckpt ls` sees it: every shard verified, LATEST and the
    // restore pick naming it, no damaged checkpoint and no save left half
    // done (an async save in flight at the signal was finished first).
    const ProcessResult ls = testing::RunProcess({HOLDFAST_BINARY, "ckpt", "ls", "--json", backup});
    ASSERT_EQ(ls.exit_code, 0) << ls.out << ls.err;
    const nlohmann::json listing = nlohmann::json::parse(ls.out, nullptr, false);
    EXPECT_EQ(listing["latest"], name) << ls.out;
    EXPECT_EQ(listing["restore"], name) << ls.out;
    EXPECT_EQ(listing["shards_verified"], true) << ls.out;
    ASSERT_TRUE(listing["checkpoints"].is_array()) << ls.out;
    std::vector<std::string> kept;
    for (const nlohmann::json& entry : listing["checkpoints"]) {
      EXPECT_EQ(entry["state"], "committed") << ls.out;
      EXPECT_EQ(entry["ok"], true) << ls.out;
      kept.push_back(entry.value("name", ""));
    }
    if (c.async) {
      // A save was in flight at the agreed step: begun at it (even step),
      // or at the step before (odd; none resolves within one step). It was
      // finished and committed, not dropped: kept beside step s is the save
      // before s, at s - 1 (odd) or s - 2 (even, at most one in flight).
      const int64_t before = step % 2 == 1 ? step - 1 : step - 2;
      EXPECT_EQ(kept, std::vector<std::string>({"ckpt-" + std::to_string(before), name})) << ls.out;
    }

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

INSTANTIATE_TEST_SUITE_P(
    Signals, PreemptionMpiTest,
    ::testing::Values(Case{2, Target::kOneRank, SIGTERM}, Case{3, Target::kOneRank, SIGTERM},
                      Case{3, Target::kEveryRank, SIGTERM}, Case{2, Target::kOneRank, SIGUSR1},
                      Case{3, Target::kMpirun, SIGUSR1}, Case{2, Target::kOneRank, SIGTERM, true}),
    [](const auto& info) { return Name(info.param); });

}  // namespace
}  // namespace holdfast
