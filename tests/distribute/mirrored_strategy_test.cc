// MirroredStrategy over in-process ranks: replicas stay bit-identical, train
// like one process, start from the chief's state, refuse to train different
// things, and agree on control words.
#include "distribute/mirrored_strategy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/fit.h"
#include "core/hash.h"
#include "core/layers.h"
#include "core/loss.h"
#include "distribute/thread_communicator.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

const SoftmaxCrossEntropy kCrossEntropy;

// 203 samples in global batches of 10: 21 steps per epoch, the last of 3
// samples. No world size from 2 to 4 divides 10, and on 4 ranks the last
// batch leaves one rank with no rows at all.
constexpr int kSamples = 203;
constexpr int64_t kBatch = 10;
constexpr int kEpochs = 2;
constexpr int kStepsPerEpoch = 21;
constexpr uint64_t kModelSeed = 100;
constexpr int kHidden = 32;

// Measured over every world size, overlap and bucket size below (Adam,
// dropout, 42 steps; the XML report records each case): parameters within
// 1.2e-7 of one process's, epoch loss within 4e-8 relative, accuracy equal;
// Evaluate over 2..4 ranks within 3e-9 relative (rows split differently go
// through differently blocked float GEMMs). The bounds leave a margin of
// about 100x for other compilers and instruction sets, yet catch any real
// slip (a missing or doubled bucket, a wrong slice, a dropped control line).
constexpr double kParamTolerance = 1e-5;
constexpr double kHistoryRelTolerance = 1e-5;
constexpr double kEvalRelTolerance = 1e-6;

Dataset Data() { return MakeBlobs(kSamples, 11); }

Trainee Model(uint64_t seed = kModelSeed) {
  return MakeClassifier(seed, /*dropout=*/true, /*adam=*/true, kHidden);
}

FitOptions Options(int epochs = kEpochs, int64_t batch = kBatch) {
  FitOptions o;
  o.epochs = epochs;
  o.batch_size = batch;
  o.seed = 5;
  return o;
}

// Hashes the parameters once training has begun (after the strategy's
// broadcast) and after every step.
class HashParams : public Callback {
 public:
  void OnTrainBegin(TrainingState& s) override { initial = Hash(s); }
  void OnBatchEnd(TrainingState& s) override { steps.push_back(Hash(s)); }
  uint64_t initial = 0;
  std::vector<uint64_t> steps;

 private:
  static uint64_t Hash(const TrainingState& s) {
    return Xxh3(std::as_const(*s.model).store().params());
  }
};

// What one rank (or the single process) ended with.
struct RunResult {
  History history;
  HashParams hashes;
  std::vector<float> params;
  int64_t iterations = 0;
  int64_t buckets = 0;
  bool overlapping = false;
  EvalResult eval;
};

RunResult TrainSingleProcess(const Dataset& data, const FitOptions& options,
                             LayoutOptions layout = {}, uint64_t model_seed = kModelSeed) {
  RunResult out;
  Trainee t = Model(model_seed);
  Replica one_process(layout);
  FitOptions o = options;
  o.callbacks = {&out.hashes};
  o.replica = &one_process;
  out.history = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  out.params = t.Params();
  out.iterations = t.optimizer->iterations();
  out.eval = Evaluate(*t.model, kCrossEntropy, data, 8, &one_process);
  return out;
}

// Trains on `world` in-process ranks; `model_seed(rank)` initialises each
// rank's model (the chief's must win).
std::vector<RunResult> TrainMirrored(
    int world, const MirroredOptions& mirrored, const Dataset& data, const FitOptions& options,
    const std::function<uint64_t(int)>& model_seed = [](int) { return kModelSeed; }) {
  std::vector<RunResult> out(world);
  RunInProcessRanks(world, [&](Communicator& comm) {
    RunResult& r = out[comm.rank()];
    Trainee t = Model(model_seed(comm.rank()));
    MirroredStrategy strategy(&comm, mirrored);
    EXPECT_EQ(strategy.rank(), comm.rank());
    EXPECT_EQ(strategy.world_size(), world);
    FitOptions o = options;
    o.replica = &strategy;
    o.callbacks = {&r.hashes};
    r.history = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
    r.params = t.Params();
    r.iterations = t.optimizer->iterations();
    r.buckets = strategy.buckets_launched();
    r.overlapping = strategy.overlapping();
    r.eval = Evaluate(*t.model, kCrossEntropy, data, 8, &strategy);
  });
  return out;
}

double MaxAbsDiff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double max = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    max = std::max(max, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return max;
}

double RelDiff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

// Every rank's run equals rank 0's bit for bit and one process's within the
// tolerances.
void ExpectMirrorsOfSingleProcess(const std::vector<RunResult>& ranks, const RunResult& single) {
  const RunResult& chief = ranks[0];
  ASSERT_EQ(chief.hashes.steps.size(), single.hashes.steps.size());
  for (size_t r = 0; r < ranks.size(); ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    const RunResult& run = ranks[r];
    EXPECT_EQ(run.hashes.initial, single.hashes.initial) << "did not start from the chief's init";
    // (a) Bit-identical parameters on every rank after every step.
    ASSERT_EQ(run.hashes.steps.size(), chief.hashes.steps.size());
    for (size_t s = 0; s < run.hashes.steps.size(); ++s) {
      ASSERT_EQ(run.hashes.steps[s], chief.hashes.steps[s]) << "replicas diverged at step " << s;
    }
    EXPECT_EQ(run.params, chief.params);
    EXPECT_EQ(run.iterations, single.iterations);
    // (b) One process's result, up to float rounding of the gradient sums.
    EXPECT_LE(MaxAbsDiff(run.params, single.params), kParamTolerance);
    ASSERT_EQ(run.history.epochs.size(), single.history.epochs.size());
    for (size_t e = 0; e < run.history.epochs.size(); ++e) {
      const EpochLogs& got = run.history.epochs[e];
      const EpochLogs& want = single.history.epochs[e];
      EXPECT_EQ(got.epoch, want.epoch);
      EXPECT_EQ(got.samples, want.samples) << "epoch " << e;
      EXPECT_TRUE(got.complete);
      EXPECT_LE(RelDiff(got.loss, want.loss), kHistoryRelTolerance)
          << "epoch " << e << ": " << got.loss << " vs " << want.loss;
      EXPECT_LE(RelDiff(got.accuracy, want.accuracy), kHistoryRelTolerance)
          << "epoch " << e << ": " << got.accuracy << " vs " << want.accuracy;
    }
    // (f) Evaluate: the same global figures on every rank.
    EXPECT_EQ(run.eval.samples, single.eval.samples);
    EXPECT_EQ(run.eval.loss, chief.eval.loss);
    EXPECT_EQ(run.eval.accuracy, chief.eval.accuracy);
  }
}

// ---------------------------------------------------------------------------
// (a) + (b): every world size, with and without overlap, with buckets of one
// float, of 256 bytes (several per step) and of 1 GiB (one per step).

class MirroredTrainingTest
    : public ::testing::TestWithParam<std::tuple<int, Overlap, size_t, bool>> {
 protected:
  int world() const { return std::get<0>(GetParam()); }
  bool invariant() const { return std::get<3>(GetParam()); }
  MirroredOptions mirrored() const {
    MirroredOptions m;
    m.overlap = std::get<1>(GetParam());
    m.bucket_bytes = std::get<2>(GetParam());
    m.layout.invariant = invariant();
    // Tiny buckets are there to force many collectives per step, also in
    // the end-of-step flush.
    if (m.bucket_bytes <= 256) m.fuse_bytes = 0;
    return m;
  }
};

TEST_P(MirroredTrainingTest, RanksStayIdenticalAndTrainLikeOneProcess) {
  const Dataset data = Data();
  const RunResult single = TrainSingleProcess(data, Options(), mirrored().layout);
  ASSERT_EQ(single.iterations, kEpochs * kStepsPerEpoch);
  const std::vector<RunResult> ranks = TrainMirrored(world(), mirrored(), data, Options());
  ExpectMirrorsOfSingleProcess(ranks, single);
  for (const RunResult& r : ranks) {
    // The gathers run after backward: no overlap in invariant mode.
    EXPECT_EQ(r.overlapping, world() > 1 && mirrored().overlap == Overlap::kOn && !invariant());
    // And it is the one process's result, bit for bit.
    if (invariant()) {
      EXPECT_EQ(r.hashes.steps, single.hashes.steps);
    }
  }
  if (world() > 1 && invariant()) {
    EXPECT_GE(ranks[0].buckets, single.iterations) << "expected a gradient gather every step";
  } else if (world() == 1) {
    // Nothing to sum: exactly the single-process run.
    EXPECT_EQ(ranks[0].hashes.steps, single.hashes.steps);
    EXPECT_EQ(ranks[0].buckets, 0);
  } else if (mirrored().bucket_bytes <= 256) {
    EXPECT_GE(ranks[0].buckets, 3 * single.iterations) << "expected several buckets per step";
  } else {
    EXPECT_EQ(ranks[0].buckets, single.iterations) << "expected one bucket per step";
  }
  double max_param_diff = 0, max_loss_rel = 0, max_accuracy_diff = 0;
  for (const RunResult& r : ranks) {
    max_param_diff = std::max(max_param_diff, MaxAbsDiff(r.params, single.params));
    for (size_t e = 0; e < r.history.epochs.size(); ++e) {
      max_loss_rel =
          std::max(max_loss_rel, RelDiff(r.history.epochs[e].loss, single.history.epochs[e].loss));
      max_accuracy_diff = std::max(max_accuracy_diff, std::abs(r.history.epochs[e].accuracy -
                                                               single.history.epochs[e].accuracy));
    }
  }
  // Measured deviations, in the XML report (--gtest_output=xml).
  char text[64];
  std::snprintf(text, sizeof text, "%.3g", max_param_diff);
  RecordProperty("max_param_abs_diff", text);
  std::snprintf(text, sizeof text, "%.3g", max_loss_rel);
  RecordProperty("max_epoch_loss_rel_diff", text);
  std::snprintf(text, sizeof text, "%.3g", max_accuracy_diff);
  RecordProperty("max_epoch_accuracy_diff", text);
}

INSTANTIATE_TEST_SUITE_P(WorldsOverlapBuckets, MirroredTrainingTest,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4),
                                            ::testing::Values(Overlap::kOn, Overlap::kOff),
                                            ::testing::Values(size_t{4}, size_t{256},
                                                              size_t{1} << 30),
                                            ::testing::Bool()),
                         [](const ::testing::TestParamInfo<MirroredTrainingTest::ParamType>& info) {
                           return "world" + std::to_string(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) == Overlap::kOn ? "_overlap"
                                                                           : "_no_overlap") +
                                  "_bucket" + std::to_string(std::get<2>(info.param)) +
                                  (std::get<3>(info.param) ? "_invariant" : "_float");
                         });

// Global batches smaller than the world: some ranks compute nothing at
// every step, yet take part in every sum.
TEST(MirroredStrategyTest, RanksWithEmptySlicesStillMatch) {
  const Dataset data = MakeBlobs(20, 12);
  const FitOptions options = Options(2, 3);
  const RunResult single = TrainSingleProcess(data, options);
  for (Overlap overlap : {Overlap::kOn, Overlap::kOff}) {
    SCOPED_TRACE(overlap == Overlap::kOn ? "overlap" : "no overlap");
    MirroredOptions m;
    m.overlap = overlap;
    m.bucket_bytes = 256;
    m.fuse_bytes = 0;
    ExpectMirrorsOfSingleProcess(TrainMirrored(4, m, data, options), single);
  }
}

// (c) Ranks initialised from different seeds end where the chief's init
// leads: BeginTraining broadcasts the chief's parameters.
TEST(MirroredStrategyTest, ChiefInitialisationWins) {
  const Dataset data = Data();
  const RunResult single = TrainSingleProcess(data, Options(), {}, /*model_seed=*/kModelSeed);
  const RunResult other = TrainSingleProcess(data, Options(), {}, /*model_seed=*/kModelSeed + 1);
  ASSERT_NE(single.hashes.initial, other.hashes.initial);
  for (int world : {2, 3, 4}) {
    SCOPED_TRACE("world " + std::to_string(world));
    const std::vector<RunResult> ranks =
        TrainMirrored(world, {}, data, Options(), [](int rank) { return kModelSeed + rank; });
    ExpectMirrorsOfSingleProcess(ranks, single);
  }
}

// The chief's optimizer state and step count win too: other ranks arrive
// with Adam moments and an iteration count from earlier training.
TEST(MirroredStrategyTest, ChiefOptimizerStateWins) {
  const Dataset data = Data();
  const RunResult single = TrainSingleProcess(data, Options());
  constexpr int kWorld = 3;
  std::vector<RunResult> ranks(kWorld);
  RunInProcessRanks(kWorld, [&](Communicator& comm) {
    RunResult& r = ranks[comm.rank()];
    Trainee t = Model();
    if (comm.rank() != 0) {
      // Warm up the optimizer alone, then put the initial weights back.
      const std::vector<float> init = t.Params();
      (void)Fit(*t.model, *t.optimizer, kCrossEntropy, MakeBlobs(30, 50 + comm.rank()),
                Options(1, 10));
      EXPECT_EQ(t.optimizer->iterations(), 3);
      std::copy(init.begin(), init.end(), t.model->store().params().begin());
    }
    MirroredStrategy strategy(&comm);
    FitOptions o = Options();
    o.replica = &strategy;
    o.callbacks = {&r.hashes};
    r.history = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
    r.params = t.Params();
    r.iterations = t.optimizer->iterations();
    r.eval = Evaluate(*t.model, kCrossEntropy, data, 8, &strategy);
  });
  ExpectMirrorsOfSingleProcess(ranks, single);
}

// (f) Evaluate with the strategy: every rank returns the global figures,
// those of one process over the whole set (batches of 7 split unevenly).
TEST(MirroredStrategyTest, EvaluateGivesGlobalFiguresOnEveryRank) {
  const Dataset data = Data();
  Trainee reference = Model();
  (void)Fit(*reference.model, *reference.optimizer, kCrossEntropy, data, Options(1));
  const std::vector<float> trained = reference.Params();
  const EvalResult single = Evaluate(*reference.model, kCrossEntropy, data, 7);
  for (int world : {1, 2, 3, 4}) {
    std::vector<EvalResult> results(world);
    RunInProcessRanks(world, [&](Communicator& comm) {
      Trainee t = Model();
      std::copy(trained.begin(), trained.end(), t.model->store().params().begin());
      MirroredStrategy strategy(&comm);
      results[comm.rank()] = Evaluate(*t.model, kCrossEntropy, data, 7, &strategy);
    });
    for (int r = 0; r < world; ++r) {
      SCOPED_TRACE("world " + std::to_string(world) + ", rank " + std::to_string(r));
      EXPECT_EQ(results[r].samples, kSamples);
      EXPECT_EQ(results[r].loss, results[0].loss);
      EXPECT_EQ(results[r].accuracy, results[0].accuracy);
      EXPECT_LE(RelDiff(results[r].loss, single.loss), kEvalRelTolerance);
      EXPECT_LE(RelDiff(results[r].accuracy, single.accuracy), kEvalRelTolerance);
    }
  }
}

// ---------------------------------------------------------------------------
// (d) Ranks that would train different things: every rank throws
// std::invalid_argument naming the first field that differs, before any step.

struct Mismatch {
  std::string name;
  std::string field;  // expected in the message
  // Changes the odd rank's setup.
  std::function<void(uint64_t* model_seed, int* hidden, float* lr, Dataset* data,
                     FitOptions* options, bool* mse)>
      change;
};

class MismatchTest : public ::testing::TestWithParam<Mismatch> {};

TEST_P(MismatchTest, EveryRankThrowsNamingTheField) {
  const Mismatch& m = GetParam();
  for (int world : {2, 3, 4}) {
    const int odd = world - 2;  // not always the chief, not always the last
    SCOPED_TRACE("world " + std::to_string(world) + ", odd rank " + std::to_string(odd));
    std::mutex mu;
    std::vector<std::string> messages(world);
    std::vector<int64_t> iterations(world, -1);
    std::vector<bool> unchanged(world, false);
    try {
      RunInProcessRanks(world, [&](Communicator& comm) {
        uint64_t model_seed = kModelSeed;
        int hidden = kHidden;
        float lr = 0.01f;
        Dataset data = Data();
        FitOptions options = Options();
        bool mse = false;
        if (comm.rank() == odd) m.change(&model_seed, &hidden, &lr, &data, &options, &mse);
        Trainee t = MakeClassifier(model_seed, /*dropout=*/true, /*adam=*/true, hidden, lr);
        const uint64_t before = t.Hash();
        MirroredStrategy strategy(&comm);
        options.replica = &strategy;
        const MeanSquaredError kMse;
        const Loss& loss = mse ? static_cast<const Loss&>(kMse) : kCrossEntropy;
        try {
          (void)Fit(*t.model, *t.optimizer, loss, data, options);
        } catch (const std::invalid_argument& e) {
          std::lock_guard lock(mu);
          messages[comm.rank()] = e.what();
          iterations[comm.rank()] = t.optimizer->iterations();
          unchanged[comm.rank()] = t.Hash() == before;
          throw;
        }
      });
      ADD_FAILURE() << "training went ahead";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("ranks disagree on the " + m.field), std::string::npos)
          << e.what();
    }
    for (int r = 0; r < world; ++r) {
      EXPECT_NE(messages[r].find("ranks disagree on the " + m.field), std::string::npos)
          << "rank " << r << ": '" << messages[r] << "'";
      EXPECT_EQ(iterations[r], 0) << "rank " << r;
      EXPECT_TRUE(unchanged[r]) << "rank " << r << ": parameters changed before the check";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Fields, MismatchTest,
    ::testing::Values(
        Mismatch{
            "BatchSize", "global batch size",
            [](uint64_t*, int*, float*, Dataset*, FitOptions* o, bool*) { o->batch_size = 12; }},
        Mismatch{"Seed", "seed",
                 [](uint64_t*, int*, float*, Dataset*, FitOptions* o, bool*) { o->seed = 6; }},
        Mismatch{"ModelWidth", "model",
                 [](uint64_t*, int* hidden, float*, Dataset*, FitOptions*, bool*) {
                   *hidden = kHidden + 1;
                 }},
        Mismatch{"OptimizerLearningRate", "optimizer",
                 [](uint64_t*, int*, float* lr, Dataset*, FitOptions*, bool*) { *lr = 0.02f; }},
        Mismatch{"DataSize", "number of training samples",
                 [](uint64_t*, int*, float*, Dataset* d, FitOptions*, bool*) {
                   *d = MakeBlobs(kSamples - 1, 11);
                 }},
        Mismatch{
            "DataContent", "training data",
            [](uint64_t*, int*, float*, Dataset* d, FitOptions*, bool*) { d->x(7, 1) += 0.5f; }},
        Mismatch{"Loss", "loss",
                 [](uint64_t*, int*, float*, Dataset*, FitOptions*, bool* mse) { *mse = true; }},
        Mismatch{"Epochs", "epochs",
                 [](uint64_t*, int*, float*, Dataset*, FitOptions* o, bool*) { o->epochs = 3; }},
        Mismatch{
            "Shuffle", "shuffle",
            [](uint64_t*, int*, float*, Dataset*, FitOptions* o, bool*) { o->shuffle = false; }},
        Mismatch{"DropRemainder", "drop_remainder",
                 [](uint64_t*, int*, float*, Dataset*, FitOptions* o, bool*) {
                   o->drop_remainder = true;
                 }}),
    [](const ::testing::TestParamInfo<Mismatch>& info) { return info.param.name; });

// The model check must see every hyper-parameter of a layer, not only its
// tensors: a rank with another dropout rate trains a different model.
TEST(MirroredStrategyTest, DropoutRateMismatchIsCaught) {
  std::vector<std::string> messages(2);
  try {
    RunInProcessRanks(2, [&](Communicator& comm) {
      Sequential model(2);
      model.Add<Dense>(8).Add<ReLU>().Add<Dropout>(comm.rank() == 0 ? 0.25f : 0.5f).Add<Dense>(3);
      model.Build(kModelSeed);
      Adam adam(0.01f);
      adam.Build(model.store().size());
      MirroredStrategy strategy(&comm);
      FitOptions o = Options(1);
      o.replica = &strategy;
      try {
        (void)Fit(model, adam, kCrossEntropy, Data(), o);
      } catch (const std::invalid_argument& e) {
        messages[comm.rank()] = e.what();
        throw;
      }
    });
    ADD_FAILURE() << "ranks with dropout 0.25 and 0.5 trained together";
  } catch (const std::invalid_argument&) {
  }
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(messages[r].find("ranks disagree on the model"), std::string::npos)
        << "rank " << r << ": '" << messages[r] << "'";
  }
}

// The numeric fields say which values the ranks hold.
TEST(MirroredStrategyTest, BatchMismatchMessageGivesTheValues) {
  std::vector<std::string> messages(2);
  auto rank_main = [&](Communicator& comm) {
    Trainee t = Model();
    MirroredStrategy strategy(&comm);
    FitOptions o = Options(1, comm.rank() == 0 ? 10 : 16);
    o.replica = &strategy;
    try {
      (void)Fit(*t.model, *t.optimizer, kCrossEntropy, Data(), o);
    } catch (const std::invalid_argument& e) {
      messages[comm.rank()] = e.what();
      throw;
    }
  };
  EXPECT_THROW(RunInProcessRanks(2, rank_main), std::invalid_argument);
  EXPECT_EQ(messages[0],
            "ranks disagree on the global batch size (values from 10 to 16; rank 0 has 10)");
  EXPECT_EQ(messages[1],
            "ranks disagree on the global batch size (values from 10 to 16; rank 1 has 16)");
}

// ---------------------------------------------------------------------------
// (e) Control words ride in the gradient all-reduce: raised before step s,
// agreed by every rank at the end of step s, cleared afterwards.

// Raises words before chosen steps on chosen ranks, records the agreed words
// after every step, and optionally stops once any stop request is agreed.
class ControlProbe : public Callback {
 public:
  ControlProbe(int rank, std::vector<int> stop_ranks, std::vector<int> failure_ranks,
               int64_t at_step, bool stop_on_request)
      : rank_(rank),
        stop_ranks_(std::move(stop_ranks)),
        failure_ranks_(std::move(failure_ranks)),
        at_step_(at_step),
        stop_on_request_(stop_on_request) {}
  void OnBatchBegin(TrainingState& s) override {
    if (s.step() != at_step_) return;
    if (std::count(stop_ranks_.begin(), stop_ranks_.end(), rank_) > 0) {
      s.replica->RequestStop();
      s.replica->RequestStop();  // raised twice, still one replica
    }
    if (std::count(failure_ranks_.begin(), failure_ranks_.end(), rank_) > 0) {
      s.replica->ReportFailure();
    }
  }
  void OnBatchEnd(TrainingState& s) override {
    stops.push_back(s.replica->control().stop_requests);
    failures.push_back(s.replica->control().failures);
    if (stop_on_request_ && s.replica->control().stop_requests > 0) s.stop_training = true;
  }
  std::vector<int> stops, failures;

 private:
  int rank_;
  std::vector<int> stop_ranks_, failure_ranks_;
  int64_t at_step_;
  bool stop_on_request_;
};

struct ControlRun {
  std::vector<std::vector<int>> stops, failures;
  std::vector<int64_t> iterations;
  std::vector<uint64_t> hashes;
};

ControlRun RunWithControl(int world, Overlap overlap, std::vector<int> stop_ranks,
                          std::vector<int> failure_ranks, bool stop_on_request) {
  ControlRun out;
  out.stops.resize(world);
  out.failures.resize(world);
  out.iterations.resize(world);
  out.hashes.resize(world);
  MirroredOptions m;
  m.overlap = overlap;
  m.bucket_bytes = 256;
  m.fuse_bytes = 0;
  const Dataset data = Data();
  RunInProcessRanks(world, [&](Communicator& comm) {
    const int r = comm.rank();
    Trainee t = Model();
    MirroredStrategy strategy(&comm, m);
    ControlProbe probe(r, stop_ranks, failure_ranks, /*at_step=*/5, stop_on_request);
    FitOptions o = Options(1);
    o.replica = &strategy;
    o.callbacks = {&probe};
    (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
    out.stops[r] = probe.stops;
    out.failures[r] = probe.failures;
    out.iterations[r] = t.optimizer->iterations();
    out.hashes[r] = t.Hash();
  });
  return out;
}

// A vector of `steps` zeros with `value` at step 5.
std::vector<int> AtStep5(int value, int steps) {
  std::vector<int> v(steps, 0);
  v[5] = value;
  return v;
}

class ControlWordsTest : public ::testing::TestWithParam<Overlap> {};

TEST_P(ControlWordsTest, StopRequestReachesEveryRankAtTheSameStep) {
  const ControlRun run = RunWithControl(4, GetParam(), {2}, {}, /*stop_on_request=*/true);
  for (int r = 0; r < 4; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(run.stops[r], AtStep5(1, 6));
    EXPECT_EQ(run.failures[r], AtStep5(0, 6));
    EXPECT_EQ(run.iterations[r], 6);  // step 5 finished everywhere, then all stopped
    EXPECT_EQ(run.hashes[r], run.hashes[0]);
  }
}

TEST_P(ControlWordsTest, WordsAreCountedAndClearedAfterTheirStep) {
  const ControlRun run =
      RunWithControl(4, GetParam(), {1, 3}, {0, 2, 3}, /*stop_on_request=*/false);
  for (int r = 0; r < 4; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(run.stops[r], AtStep5(2, kStepsPerEpoch));
    EXPECT_EQ(run.failures[r], AtStep5(3, kStepsPerEpoch));
    EXPECT_EQ(run.iterations[r], kStepsPerEpoch);
  }
}

TEST_P(ControlWordsTest, FailureReportAlone) {
  const ControlRun run = RunWithControl(3, GetParam(), {}, {1}, /*stop_on_request=*/true);
  for (int r = 0; r < 3; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(run.failures[r], AtStep5(1, kStepsPerEpoch));
    EXPECT_EQ(run.stops[r], AtStep5(0, kStepsPerEpoch));
    EXPECT_EQ(run.iterations[r], kStepsPerEpoch);
  }
}

TEST_P(ControlWordsTest, OneRankWorldSeesItsOwnWords) {
  const ControlRun run = RunWithControl(1, GetParam(), {0}, {0}, /*stop_on_request=*/true);
  EXPECT_EQ(run.stops[0], AtStep5(1, 6));
  EXPECT_EQ(run.failures[0], AtStep5(1, 6));
  EXPECT_EQ(run.iterations[0], 6);
}

INSTANTIATE_TEST_SUITE_P(Overlap, ControlWordsTest, ::testing::Values(Overlap::kOn, Overlap::kOff),
                         [](const ::testing::TestParamInfo<Overlap>& info) {
                           return info.param == Overlap::kOn ? "Overlap" : "NoOverlap";
                         });

// ---------------------------------------------------------------------------
// Failures: a rank that throws mid-training releases the others (whose sync
// threads wait in a bucket all-reduce) instead of leaving them hanging.

struct CallbackFailure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ThrowOnRankAtStep : public Callback {
 public:
  ThrowOnRankAtStep(int rank, int bad_rank, int64_t step)
      : rank_(rank), bad_rank_(bad_rank), step_(step) {}
  void OnBatchEnd(TrainingState& s) override {
    if (rank_ == bad_rank_ && s.step() == step_) throw CallbackFailure("callback failed");
  }

 private:
  int rank_, bad_rank_;
  int64_t step_;
};

TEST(MirroredStrategyTest, ExceptionOnOneRankDoesNotHangTheOthers) {
  for (Overlap overlap : {Overlap::kOn, Overlap::kOff}) {
    SCOPED_TRACE(overlap == Overlap::kOn ? "overlap" : "no overlap");
    MirroredOptions m;
    m.overlap = overlap;
    m.bucket_bytes = 256;
    m.fuse_bytes = 0;
    std::atomic<int> aborted{0};
    auto rank_main = [&](Communicator& comm) {
      Trainee t = Model();
      MirroredStrategy strategy(&comm, m);
      ThrowOnRankAtStep thrower(comm.rank(), 1, 4);
      FitOptions o = Options();
      o.replica = &strategy;
      o.callbacks = {&thrower};
      try {
        (void)Fit(*t.model, *t.optimizer, kCrossEntropy, Data(), o);
      } catch (const CommunicatorAborted&) {
        ++aborted;
        throw;
      }
    };
    EXPECT_THROW(RunInProcessRanks(3, rank_main), CallbackFailure);
    EXPECT_EQ(aborted.load(), 2);
  }
}

// More ranks than rows: batches of 2 on 3 ranks, so one rank computes no
// rows, yet joins both gathers and computes its share of the gradients; the
// bits are one process's.
TEST(MirroredStrategyTest, MoreRanksThanRowsGiveTheSameBits) {
  const Dataset data = Data();
  const FitOptions options = Options(kEpochs, 2);
  const RunResult single = TrainSingleProcess(data, options);
  for (const RunResult& r : TrainMirrored(3, MirroredOptions{}, data, options)) {
    EXPECT_EQ(r.hashes.steps, single.hashes.steps);
    EXPECT_EQ(r.eval.loss, single.eval.loss);
    EXPECT_EQ(r.eval.accuracy, single.eval.accuracy);
  }
}

// Batches of 32 (the epoch's last of 11 rows) dealt to 2, 3 and 4 ranks:
// one process's bits at every step.
TEST(MirroredStrategyTest, EveryWorldSizeGivesOneProcesssBits) {
  const Dataset data = Data();
  const FitOptions options = Options(kEpochs, 32);
  const RunResult single = TrainSingleProcess(data, options);
  for (int world : {2, 3, 4}) {
    SCOPED_TRACE("world " + std::to_string(world));
    for (const RunResult& r : TrainMirrored(world, MirroredOptions{}, data, options)) {
      EXPECT_EQ(r.hashes.steps, single.hashes.steps);
      EXPECT_EQ(r.params, single.params);
      EXPECT_EQ(r.eval.loss, single.eval.loss);
    }
  }
}

// The strategy can be used for a second Fit (resuming where the first
// stopped) and stays in step.
TEST(MirroredStrategyTest, SecondFitContinuesInStep) {
  const Dataset data = Data();
  const RunResult single = TrainSingleProcess(data, Options(2));
  std::vector<RunResult> ranks(3);
  RunInProcessRanks(3, [&](Communicator& comm) {
    RunResult& r = ranks[comm.rank()];
    Trainee t = Model();
    MirroredStrategy strategy(&comm, MirroredOptions{.bucket_bytes = 256,
                                                     .fuse_bytes = 0,
                                                     .overlap = Overlap::kOn,
                                                     .layout = {.invariant = false}});
    FitOptions o = Options(1);
    o.replica = &strategy;
    o.callbacks = {&r.hashes};
    History first = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
    o.epochs = 2;
    o.initial_epoch = 1;
    History second = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
    r.history.epochs = {first.epochs[0], second.epochs[0]};
    r.params = t.Params();
    r.iterations = t.optimizer->iterations();
    r.eval = Evaluate(*t.model, kCrossEntropy, data, 8, &strategy);
    r.hashes.initial = single.hashes.initial;  // the second Fit's OnTrainBegin overwrote it
  });
  ExpectMirrorsOfSingleProcess(ranks, single);
}

}  // namespace
}  // namespace holdfast
