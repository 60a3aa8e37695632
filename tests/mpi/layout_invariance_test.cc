// Layout invariance end to end (docs/layout-invariance.md): fmnist_mlp under a
// real mpirun ends with the same weights (weights_xxh64), test accuracy, test
// loss and final training loss and accuracy, bit for bit, on 1, 2, 3 and 4
// ranks with 1 or 2 threads each (oversubscribed: the reference machine has 2
// cores), for a small and a wide model and for global batches that do not
// split evenly over the ranks. Every run is compared with
// the same configuration on one rank with one thread. --layout-invariant off
// still trains, and says so in its summary.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "tests/testutil/subprocess.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

using testing::ProcessResult;
using testing::RunProcess;

// Bounds every job, so that a hung one fails the test (exit 124) instead of
// running into the CTest timeout. The wide model's runs take 4-6 s each on
// an idle 2-core machine (most of it the evaluation of 10000 test samples).
constexpr int kJobSeconds = 120;

// Where a run's ranks and threads are. `mpirun` false: the program alone,
// without mpirun (np must be 1).
struct Layout {
  int np = 1;
  int threads = 1;
  bool mpirun = true;
};

std::string Name(const Layout& l) {
  return (l.mpirun ? "np " + std::to_string(l.np) : std::string("alone (no mpirun)")) + " x " +
         std::to_string(l.threads) + (l.threads == 1 ? " thread" : " threads");
}

// The one-rank, one-thread run every other layout is compared with.
constexpr Layout kReference = {.np = 1, .threads = 1};

// np 1..4 x threads 1..2, but the reference.
std::vector<Layout> EveryLayout() {
  std::vector<Layout> out;
  for (int np : {1, 2, 3, 4}) {
    for (int threads : {1, 2}) {
      if (np != kReference.np || threads != kReference.threads) out.push_back({np, threads});
    }
  }
  return out;
}

// The figures the layout must not change, bit for bit.
const std::vector<std::string> kInvariantFields = {"weights_xxh64", "test_accuracy", "test_loss",
                                                   "final_train_loss", "final_train_accuracy"};

// s[key], or null when s is not an object or has no such key (operator[] on
// a const json must not be asked for a missing key).
nlohmann::json Get(const nlohmann::json& s, const std::string& key) {
  return s.is_object() && s.contains(key) ? s[key] : nlohmann::json();
}

// "weights_xxh64 6fcf5c51e0842c32, test_accuracy 0.3525, ..." with every
// number to 17 significant digits (all its bits).
std::string Figures(const nlohmann::json& s) {
  std::ostringstream out;
  out.precision(17);
  for (const std::string& field : kInvariantFields) {
    if (&field != &kInvariantFields.front()) out << ", ";
    out << field << " ";
    if (!s.is_object() || !s.contains(field)) {
      out << "(missing)";
    } else if (s[field].is_string()) {
      out << s[field].get<std::string>();
    } else if (s[field].is_number()) {
      out << s[field].get<double>();
    } else {
      out << s[field].dump();
    }
  }
  return out.str();
}

class LayoutInvarianceTest : public ::testing::Test {
 protected:
  struct Run {
    ProcessResult process;
    nlohmann::json summary;
  };

  // fmnist_mlp with `args` (plus --quiet, --threads and a summary file) at
  // `layout`, under `mpirun --oversubscribe -np N` unless layout.mpirun is false.
  Run Train(const Layout& layout, const std::vector<std::string>& args) {
    const std::string summary = dir_.File("summary-" + std::to_string(runs_++) + ".json");
    std::vector<std::string> argv = {TIMEOUT, "--kill-after=5", std::to_string(kJobSeconds)};
    if (layout.mpirun) {
      argv.insert(argv.end(), {MPIRUN, "--oversubscribe", "-np", std::to_string(layout.np)});
    }
    argv.insert(argv.end(), {FMNIST_MLP, "--quiet", "--threads", std::to_string(layout.threads),
                             "--summary-json", summary});
    argv.insert(argv.end(), args.begin(), args.end());
    Run run;
    run.process = RunProcess(argv, testing::kMpirunEnv);
    std::ifstream in(summary);
    if (in) run.summary = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    return run;
  }

  // A finished run at `layout` that reports that layout, `steps` steps and
  // every invariant figure.
  static void ExpectFinished(const Run& run, const Layout& layout, int64_t steps,
                             bool invariant = true) {
    ASSERT_EQ(run.process.exit_code, 0) << Name(layout) << ":\n" << run.process.err;
    const nlohmann::json& s = run.summary;
    ASSERT_TRUE(s.is_object()) << Name(layout) << ": no summary\n" << run.process.err;
    EXPECT_EQ(Get(s, "world_size"), layout.np) << Name(layout);
    EXPECT_EQ(Get(s, "threads"), layout.threads) << Name(layout);
    EXPECT_EQ(Get(s, "layout_invariant"), invariant) << Name(layout);
    EXPECT_EQ(Get(s, "steps"), steps) << Name(layout);
    ASSERT_TRUE(Get(s, "weights_xxh64").is_string()) << s.dump();
    EXPECT_EQ(s["weights_xxh64"].get<std::string>().size(), 16u) << s.dump();
    for (const char* number :
         {"test_accuracy", "test_loss", "final_train_loss", "final_train_accuracy"}) {
      ASSERT_TRUE(Get(s, number).is_number()) << number << " in " << s.dump();
      EXPECT_TRUE(std::isfinite(s[number].get<double>())) << number << " in " << s.dump();
    }
  }

  // Trains `args` at the reference layout and at each of `layouts`, and
  // expects every invariant figure of every run to equal the reference's.
  void ExpectSameBitsOnEveryLayout(const std::string& what, const std::vector<std::string>& args,
                                   const std::vector<Layout>& layouts, int64_t steps) {
    const Run reference = Train(kReference, args);
    ExpectFinished(reference, kReference, steps);
    if (HasFatalFailure()) return;
    const nlohmann::json& expected = reference.summary;
    std::printf("%s, %s: %s\n", what.c_str(), Name(kReference).c_str(), Figures(expected).c_str());
    for (const Layout& layout : layouts) {
      SCOPED_TRACE(what + ", " + Name(layout));
      const Run run = Train(layout, args);
      ExpectFinished(run, layout, steps);
      if (HasFatalFailure()) return;
      bool same = true;
      for (const std::string& field : kInvariantFields) {
        EXPECT_EQ(run.summary[field], expected[field])
            << field << " differs.\n  " << Name(layout) << ": " << Figures(run.summary) << "\n  "
            << Name(kReference) << ": " << Figures(expected);
        same = same && run.summary[field] == expected[field];
      }
      std::printf("%s, %s: %s\n", what.c_str(), Name(layout).c_str(),
                  same ? "the same" : Figures(run.summary).c_str());
    }
  }

  TempDir dir_;
  int runs_ = 0;
};

// Default hidden layers (784-256-32-10, dropout 0.2): 600 samples in global
// batches of 60, 10 steps.
const std::vector<std::string> kSmallModel = {"--train-samples", "600", "--epochs", "1",
                                              "--batch",         "60"};

TEST_F(LayoutInvarianceTest, SmallModelHasTheSameBitsOnEveryLayout) {
  std::vector<Layout> layouts = EveryLayout();
  // Without mpirun (the local communicator) too.
  layouts.push_back({.np = 1, .threads = 1, .mpirun = false});
  layouts.push_back({.np = 1, .threads = 2, .mpirun = false});
  ExpectSameBitsOnEveryLayout("small model", kSmallModel, layouts, 10);
}

// 784-2048-2048-2048-10 (10.3 M parameters): products big enough for every
// blocking and threading decision of the kernels to come into play, and
// gradient shares cut inside the big kernels. 384 samples in global batches
// of 128, 3 steps.
TEST_F(LayoutInvarianceTest, BigModelHasTheSameBitsOnEveryLayout) {
  ExpectSameBitsOnEveryLayout(
      "big model",
      {"--hidden", "2048,2048,2048", "--train-samples", "384", "--epochs", "1", "--batch", "128"},
      EveryLayout(), 3);
}

// A global batch of 50 on 3 and 4 ranks: rows dealt 17/17/16 or
// 13/13/12/12. Then 510 samples: the last batch has 10 rows, dealt 4/3/3 or
// 3/3/2/2.
TEST_F(LayoutInvarianceTest, UnevenSplitsHaveTheSameBitsAsOneRank) {
  ExpectSameBitsOnEveryLayout("batch 50 x 10",
                              {"--train-samples", "500", "--epochs", "1", "--batch", "50"},
                              {{3, 1}, {3, 2}, {4, 1}, {4, 2}}, 10);
  ExpectSameBitsOnEveryLayout("batch 50 x 10 + 10",
                              {"--train-samples", "510", "--epochs", "1", "--batch", "50"},
                              {{3, 2}, {4, 1}}, 11);
}

// --layout-invariant off: the BLAS path still trains to the same figures up
// to rounding (measured: test loss within 1e-8 relative, test accuracy
// equal) and reports layout_invariant false. Saying on explicitly is the
// default.
TEST_F(LayoutInvarianceTest, OptOutStillTrainsAndSaysSo) {
  const Run invariant = Train(kReference, kSmallModel);
  ExpectFinished(invariant, kReference, 10);
  if (HasFatalFailure()) return;
  const nlohmann::json& expected = invariant.summary;

  std::vector<std::string> explicit_on = kSmallModel;
  explicit_on.insert(explicit_on.end(), {"--layout-invariant", "on"});
  const Layout two_by_two = {.np = 2, .threads = 2};
  const Run on = Train(two_by_two, explicit_on);
  ExpectFinished(on, two_by_two, 10);
  if (HasFatalFailure()) return;
  for (const std::string& field : kInvariantFields) {
    EXPECT_EQ(on.summary[field], expected[field])
        << field << " differs.\n  --layout-invariant on, " << Name(two_by_two) << ": "
        << Figures(on.summary) << "\n  default, " << Name(kReference) << ": " << Figures(expected);
  }

  std::vector<std::string> off = kSmallModel;
  off.insert(off.end(), {"--layout-invariant", "off"});
  for (const Layout& layout : {kReference, two_by_two}) {
    SCOPED_TRACE("--layout-invariant off, " + Name(layout));
    const Run run = Train(layout, off);
    ExpectFinished(run, layout, 10, /*invariant=*/false);
    if (HasFatalFailure()) return;
    const nlohmann::json& s = run.summary;
    EXPECT_NEAR(s["test_accuracy"].get<double>(), expected["test_accuracy"].get<double>(), 0.01)
        << Figures(s);
    for (const char* loss : {"test_loss", "final_train_loss"}) {
      const double got = s[loss], want = expected[loss];
      EXPECT_LE(std::abs(got - want), 1e-5 * want)
          << loss << ": " << Figures(s) << "\n  invariant: " << Figures(expected);
    }
    std::printf("--layout-invariant off, %s: %s\n", Name(layout).c_str(), Figures(s).c_str());
  }
}

}  // namespace
}  // namespace holdfast
