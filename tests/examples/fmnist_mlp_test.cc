// End-to-end tests of the fmnist_mlp and toy_linear programs on the real
// Fashion-MNIST data, run as a user runs them.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/dataset.h"
#include "tests/testutil/subprocess.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using testing::CountLines;
using testing::RunProcess;

class FmnistMlpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("holdfast-fmnist-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs fmnist_mlp with `args` (plus --quiet and a summary file) and returns
  // the parsed summary; fails the test on a non-zero exit.
  nlohmann::json Train(std::vector<std::string> args, const std::string& tag) {
    const std::string summary = (dir_ / (tag + ".json")).string();
    std::vector<std::string> argv = {FMNIST_MLP, "--quiet", "--summary-json", summary};
    argv.insert(argv.end(), args.begin(), args.end());
    const auto r = RunProcess(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::ifstream in(summary);
    return nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  }

  fs::path dir_;
};

TEST_F(FmnistMlpTest, HelpDocumentsEveryFlag) {
  const auto r = RunProcess({FMNIST_MLP, "--help"});
  ASSERT_EQ(r.exit_code, 0);
  for (const char* flag :
       {"--data", "--hidden", "--dropout", "--optimizer", "--lr", "--batch", "--epochs", "--seed",
        "--threads", "--train-samples", "--quiet", "--summary-json", "--csv-log",
        "--drop-remainder", "--momentum", "--batch-log"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << "--help does not mention " << flag;
  }
}

TEST_F(FmnistMlpTest, MissingDataDirectoryIsOneLineAndExit2) {
  const auto r = RunProcess({FMNIST_MLP, "--data", "/nonexistent/fmnist", "--quiet"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/fmnist"), std::string::npos) << r.err;
}

TEST_F(FmnistMlpTest, BadFlagIsOneLineAndExit2) {
  const auto r = RunProcess({FMNIST_MLP, "--optimizer", "rmsprop"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  const auto r2 = RunProcess({FMNIST_MLP, "--no-such-flag"});
  EXPECT_EQ(r2.exit_code, 2);
  EXPECT_EQ(CountLines(r2.err), 1) << r2.err;
}

// Copies the real data files, damages one, and expects a one-line error
// naming the damaged file.
TEST_F(FmnistMlpTest, CorruptIdxFileIsOneLineAndExit2) {
  const fs::path data = dir_ / "data";
  fs::create_directories(data);
  for (const char* name : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                           "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
    fs::copy_file(fs::path(kFashionMnistDir) / name, data / name);
  }
  const fs::path victim = data / "train-images-idx3-ubyte.gz";
  {  // A truncated download.
    fs::resize_file(victim, fs::file_size(victim) / 2);
    const auto r = RunProcess({FMNIST_MLP, "--data", data.string(), "--quiet"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(CountLines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(victim.string()), std::string::npos) << r.err;
  }
  {  // Not an IDX file at all.
    std::ofstream(victim, std::ios::trunc) << "<html>404 not found</html>";
    const auto r = RunProcess({FMNIST_MLP, "--data", data.string(), "--quiet"});
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(CountLines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find(victim.string()), std::string::npos) << r.err;
  }
}

// Bit-exact for a given seed, whatever the thread count (layout-invariant by
// default: docs/layout-invariance.md); another seed, other weights.
TEST_F(FmnistMlpTest, SameSeedSameWeights) {
  const std::vector<std::string> args = {"--epochs", "2", "--train-samples", "3000"};
  auto with = [&](std::vector<std::string> extra) {
    std::vector<std::string> a = args;
    a.insert(a.end(), extra.begin(), extra.end());
    return a;
  };
  const auto a = Train(with({"--threads", "1"}), "a");
  const auto b = Train(with({"--threads", "1"}), "b");
  const auto c = Train(with({"--threads", "2"}), "c");
  const auto c2 = Train(with({"--threads", "2"}), "c2");
  const auto d = Train(with({"--threads", "1", "--seed", "7"}), "d");
  ASSERT_TRUE(a.is_object() && b.is_object() && c.is_object() && c2.is_object() && d.is_object());
  EXPECT_EQ(a["weights_xxh64"], b["weights_xxh64"]);
  EXPECT_EQ(c["weights_xxh64"], c2["weights_xxh64"]);
  EXPECT_EQ(a["weights_xxh64"], c["weights_xxh64"]) << "1 thread and 2 threads differ";
  EXPECT_EQ(a["threads"], 1);
  EXPECT_EQ(c["threads"], 2);
  EXPECT_NE(a["weights_xxh64"], d["weights_xxh64"]);
  EXPECT_EQ(a["weights_xxh64"].get<std::string>().size(), 16u);
  EXPECT_EQ(a["steps"], 2 * 60);
  EXPECT_EQ(a["epochs_completed"], 2);
  EXPECT_EQ(a["world_size"], 1);
  EXPECT_TRUE(a["resumed_from"].is_null());
  EXPECT_GT(a["samples_per_second"].get<double>(), 0);
}

// A run that crashes after its last checkpoint, with a row torn by the kill,
// resumes and leaves the batch log of a run that never stopped: steps 1..N
// once each, in order, with the same losses.
TEST_F(FmnistMlpTest, BatchLogOfAResumedRunContinuesWithConsecutiveSteps) {
  // 1000 samples, batch 50: 20 steps per epoch, 40 in all; a save every 7.
  auto run = [&](const fs::path& log, std::vector<std::string> extra,
                 const std::string& epochs = "2") {
    std::vector<std::string> argv = {FMNIST_MLP,  "--batch-log", log.string(),      "--quiet",
                                     "--threads", "1",           "--train-samples", "1000",
                                     "--epochs",  epochs};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return RunProcess(argv);
  };
  const fs::path straight = dir_ / "straight.csv", resumed = dir_ / "resumed.csv";
  const std::string backup = (dir_ / "backup").string();
  ASSERT_EQ(run(straight, {}).exit_code, 0);

  // Crashes once 30 steps are done; the last checkpoint is step 28.
  auto r = run(resumed, {"--backup-dir", backup, "--save-freq", "7", "--interrupt-at-step", "30"});
  ASSERT_EQ(r.exit_code, 1) << r.err;
  std::string crashed = ReadFileToString(resumed);
  EXPECT_TRUE(crashed.ends_with("\n")) << crashed;
  EXPECT_EQ(CountLines(crashed), 1 + 30) << crashed;
  std::ofstream(resumed, std::ios::app) << "31,1,1,0.12";  // torn by a kill mid-write

  r = run(resumed, {"--backup-dir", backup, "--save-freq", "7"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string log = ReadFileToString(resumed);
  EXPECT_EQ(log, ReadFileToString(straight));
  std::istringstream lines(log);
  std::string line;
  ASSERT_TRUE(std::getline(lines, line));
  EXPECT_EQ(line, "step,epoch,batch,loss");
  int64_t expected_step = 1;
  for (; std::getline(lines, line); ++expected_step) {
    long long step = 0, epoch = 0, batch = 0;
    double loss = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "%lld,%lld,%lld,%lf", &step, &epoch, &batch, &loss), 4)
        << line;
    EXPECT_EQ(step, expected_step) << log;
    EXPECT_EQ(epoch, (step - 1) / 20) << line;
    EXPECT_EQ(batch, (step - 1) % 20) << line;
    EXPECT_GT(loss, 0) << line;
  }
  EXPECT_EQ(expected_step, 41) << log;

  // A fresh run (no backup) starts the file over.
  ASSERT_EQ(run(resumed, {}, "1").exit_code, 0);
  EXPECT_EQ(CountLines(ReadFileToString(resumed)), 1 + 20);
}

TEST_F(FmnistMlpTest, BatchLogRefusesAFileThatIsNotOne) {
  const fs::path notes = dir_ / "notes.csv";
  std::ofstream(notes) << "my,own\ndata\n";
  const auto r = RunProcess({FMNIST_MLP, "--quiet", "--train-samples", "100", "--epochs", "1",
                             "--batch-log", notes.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(CountLines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find("not a batch log"), std::string::npos) << r.err;
  EXPECT_EQ(ReadFileToString(notes), "my,own\ndata\n");
}

// Every file and directory under `dir` with its content (directories: empty),
// but the LOCK file, which names the last run that held the directory.
std::map<std::string, std::string> Tree(const fs::path& dir) {
  std::map<std::string, std::string> tree;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = fs::relative(e.path(), dir).string();
    if (name == "LOCK") continue;
    tree[name] = e.is_regular_file() ? ReadFileToString(e.path().string()) : std::string();
  }
  return tree;
}

// 1000 samples in global batches of 50: 20 steps per epoch, 60 in all; with
// a backup, a save every 10 steps.
const std::vector<std::string> kLayoutRun = {"--train-samples", "1000", "--epochs", "3",
                                             "--save-freq",     "10"};

// A checkpoint written in the default mode. Resuming it with
// --layout-invariant off would change the result: refused at start with exit
// 2 and one line naming both settings, before any training, and the backup is
// left as it was: a run with the checkpoint's own setting then resumes it and
// ends with the uninterrupted weights.
TEST_F(FmnistMlpTest, ResumingWithAnotherModeIsRefusedAndKeepsTheCheckpoint) {
  const std::string backup = (dir_ / "backup").string();
  auto with = [](const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--threads", "1"};
    args.insert(args.end(), kLayoutRun.begin(), kLayoutRun.end());
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  auto run = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {FMNIST_MLP, "--quiet"};
    for (const std::string& a : with(extra)) argv.push_back(a);
    return RunProcess(argv);
  };
  const auto straight = Train(with({}), "straight");
  ASSERT_TRUE(straight.is_object());
  const auto broken = run({"--backup-dir", backup, "--interrupt-at-step", "50"});
  ASSERT_EQ(broken.exit_code, 1) << broken.err;
  ASSERT_TRUE(fs::exists(fs::path(backup) / "ckpt-50" / "MANIFEST.json"));
  const std::map<std::string, std::string> saved = Tree(backup);

  struct Refusal {
    std::vector<std::string> flags;
    std::string asked;  // how the refusal names this run's setting
  };
  for (const Refusal& c :
       {Refusal{{"--layout-invariant", "off"}, "this run has --layout-invariant off"}}) {
    SCOPED_TRACE(c.flags[0] + " " + c.flags[1]);
    const std::string summary = (dir_ / "refused.json").string();
    std::vector<std::string> extra = {"--backup-dir", backup, "--summary-json", summary};
    extra.insert(extra.end(), c.flags.begin(), c.flags.end());
    const auto r = run(extra);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(CountLines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("written with --layout-invariant on"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(c.asked), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("resuming would change the result"), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(summary)) << "a refused run trained";
    EXPECT_EQ(r.out.find("test accuracy"), std::string::npos) << r.out;
    EXPECT_TRUE(Tree(backup) == saved) << "the refused run changed " << backup;
  }

  const auto resumed = Train(with({"--backup-dir", backup}), "resumed");
  ASSERT_TRUE(resumed.is_object());
  ASSERT_TRUE(resumed["resumed_from"].is_object()) << resumed.dump();
  EXPECT_EQ(resumed["resumed_from"]["step"], 50);
  EXPECT_EQ(resumed["weights_xxh64"], straight["weights_xxh64"]);
}

// --layout-invariant off, written with 2 threads: a resume with 1 thread is
// accepted (exit 0) with a one-line warning that it cannot be bit-exact; a
// resume with the writer's 2 threads says nothing and ends with the weights of
// an uninterrupted 2-thread run.
TEST_F(FmnistMlpTest, OptOutResumeWithOtherThreadsWarnsThatItCannotBeBitExact) {
  auto run = [&](const std::string& threads, const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {
        FMNIST_MLP,           "--quiet", "--threads",      threads,
        "--layout-invariant", "off",     "--summary-json", (dir_ / "summary.json").string()};
    argv.insert(argv.end(), kLayoutRun.begin(), kLayoutRun.end());
    argv.insert(argv.end(), extra.begin(), extra.end());
    fs::remove(dir_ / "summary.json");
    const auto r = RunProcess(argv);
    std::ifstream in(dir_ / "summary.json");
    return std::make_pair(r, nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false));
  };
  const auto [straight, straight_summary] = run("2", {});
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  EXPECT_EQ(straight_summary["layout_invariant"], false);

  for (const std::string threads : {"1", "2"}) {
    SCOPED_TRACE("written with 2 threads, resumed with " + threads);
    const std::string backup = (dir_ / ("backup-" + threads)).string();
    const auto broken = run("2", {"--backup-dir", backup, "--interrupt-at-step", "50"}).first;
    ASSERT_EQ(broken.exit_code, 1) << broken.err;
    const auto [resumed, s] = run(threads, {"--backup-dir", backup});
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    ASSERT_TRUE(s.is_object() && s["resumed_from"].is_object()) << resumed.err;
    EXPECT_EQ(s["resumed_from"]["step"], 50);
    EXPECT_EQ(s["layout_invariant"], false);
    EXPECT_EQ(s["threads"], std::stoi(threads));
    if (threads == "1") {
      EXPECT_EQ(CountLines(resumed.err), 1) << resumed.err;
      EXPECT_NE(resumed.err.find("cannot be bit-exact"), std::string::npos) << resumed.err;
    } else {
      EXPECT_EQ(resumed.err.find("cannot be bit-exact"), std::string::npos) << resumed.err;
      EXPECT_EQ(s["weights_xxh64"], straight_summary["weights_xxh64"]);
    }
  }
}

// The quality bar: >= 0.85 test accuracy after 3 epochs (seed 42).
// One job per backup directory: a second job on it stops at start naming the
// first; once the first is killed (-9), a new job takes the directory over.
TEST_F(FmnistMlpTest, ASecondJobOnTheSameBackupIsRefusedUntilTheFirstIsGone) {
  const std::string backup = (dir_ / "backup").string();
  const std::vector<std::string> args = {FMNIST_MLP,    "--quiet", "--backup-dir",    backup,
                                         "--save-freq", "10",      "--train-samples", "2000",
                                         "--epochs"};
  std::vector<std::string> long_run = args;
  long_run.push_back("200");
  testing::Subprocess first(long_run);
  const std::string holder = "pid " + std::to_string(first.pid()) + ",";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  auto lock_text = [&] {
    return fs::exists(backup + "/LOCK") ? ReadFileToString(backup + "/LOCK") : std::string();
  };
  while (lock_text().find(holder) == std::string::npos) {
    ASSERT_TRUE(first.running()) << first.err();
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "the first job never took the lock";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  std::vector<std::string> second_run = args;
  second_run.insert(second_run.end(), {"1", "--summary-json", (dir_ / "second.json").string()});
  const auto second = RunProcess(second_run);
  EXPECT_EQ(second.exit_code, 2) << second.err;
  EXPECT_EQ(CountLines(second.err), 1) << second.err;
  EXPECT_NE(second.err.find(backup + " is in use by another job: host "), std::string::npos)
      << second.err;
  EXPECT_NE(second.err.find(holder), std::string::npos) << second.err;
  EXPECT_FALSE(fs::exists(dir_ / "second.json")) << "the refused job trained";
  EXPECT_TRUE(first.running()) << "the refused job ended the first one";

  first.Signal(SIGKILL);
  (void)first.Wait();
  const auto third = RunProcess(second_run);
  EXPECT_EQ(third.exit_code, 0) << third.err;
  EXPECT_TRUE(fs::exists(dir_ / "second.json"));
  EXPECT_EQ(lock_text().find(holder), std::string::npos);
}

// A backup directory that cannot be used stops the run at start: one line,
// exit 2, no training (it used to warn at every save and exit 0, or exit 1).
TEST_F(FmnistMlpTest, AnUnusableBackupDirectoryIsOneLineAndExit2BeforeTraining) {
  const std::string file = (dir_ / "a-file").string();
  std::ofstream(file) << "mine";
  const std::string read_only = (dir_ / "read-only").string();
  fs::create_directories(read_only);
  bool mounted = false;  // root writes through permissions: a read-only mount does not
  if (::geteuid() == 0) {
    ASSERT_EQ(::mount("tmpfs", read_only.c_str(), "tmpfs", MS_RDONLY, "size=64k"), 0)
        << std::strerror(errno);
    mounted = true;
  } else {
    fs::permissions(read_only, fs::perms::owner_read | fs::perms::owner_exec);
  }
  for (const std::string& backup : {file, file + "/sub", read_only}) {
    SCOPED_TRACE(backup);
    const std::string summary = (dir_ / "summary.json").string();
    const auto r = RunProcess({FMNIST_MLP, "--quiet", "--backup-dir", backup, "--train-samples",
                               "500", "--summary-json", summary});
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_EQ(CountLines(r.err), 1) << r.err;
    EXPECT_NE(r.err.find("cannot keep checkpoints in " + backup + ": "), std::string::npos)
        << r.err;
    EXPECT_FALSE(fs::exists(summary)) << "it trained";
  }
  if (mounted) ::umount2(read_only.c_str(), MNT_DETACH);
  fs::permissions(read_only, fs::perms::owner_all);
  EXPECT_EQ(ReadFileToString(file), "mine");
}

TEST_F(FmnistMlpTest, ReachesQualityBarInThreeEpochs) {
  const auto s = Train({"--epochs", "3"}, "quality");
  ASSERT_TRUE(s.is_object());
  EXPECT_GE(s["test_accuracy"].get<double>(), 0.85) << s.dump();
  EXPECT_EQ(s["steps"], 3 * 1200);
}

TEST(ToyLinearTest, LossFallsStepByStep) {
  const auto r = RunProcess({TOY_LINEAR});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<double> losses;
  std::istringstream lines(r.out);
  std::string line;
  while (std::getline(lines, line)) {
    double loss;
    if (std::sscanf(line.c_str(), "epoch %*d step %*d loss %lf", &loss) == 1)
      losses.push_back(loss);
  }
  ASSERT_EQ(losses.size(), 50u) << r.out;  // 100 samples / batch 2
  // The data comes in order, so compare the same batch (x = 8, 9) in the
  // first and the last of the ten repeats.
  EXPECT_LT(losses[49], losses[4] / 4) << r.out;
}

}  // namespace
}  // namespace holdfast
