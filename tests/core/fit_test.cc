#include "core/fit.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/callbacks.h"
#include "core/hash.h"
#include "core/layers.h"
#include "core/loss.h"
#include "core/optimizer.h"
#include "core/sequential.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

// y = x0 - 2 x1 + 0.5 for x uniform in [-1, 1]^2.
Dataset MakeLinear(int n, uint32_t seed) {
  Dataset ds;
  ds.x = RandomMatrix(n, 2, -1, 1, seed);
  ds.y.resize(n, 1);
  for (int i = 0; i < n; ++i) ds.y(i, 0) = ds.x(i, 0) - 2 * ds.x(i, 1) + 0.5f;
  return ds;
}

FitOptions Options(int epochs, int64_t batch_size, uint64_t seed = 5) {
  FitOptions o;
  o.epochs = epochs;
  o.batch_size = batch_size;
  o.seed = seed;
  return o;
}

const SoftmaxCrossEntropy kCrossEntropy;

// Records every hook as a line of text.
class Recorder : public Callback {
 public:
  void OnTrainBegin(TrainingState& s) override {
    Add("train_begin", s);
    batches_per_epoch = s.batches_per_epoch;
    samples_per_epoch = s.samples_per_epoch;
  }
  void OnTrainEnd(TrainingState& s) override { Add("train_end", s); }
  void OnEpochBegin(TrainingState& s) override { Add("epoch_begin " + Str(s.epoch), s); }
  void OnEpochEnd(TrainingState& s, const EpochLogs& logs) override {
    Add("epoch_end " + Str(s.epoch) + " logs " + Str(logs.epoch), s);
    epoch_logs.push_back(logs);
  }
  void OnBatchBegin(TrainingState& s) override {
    Add("batch_begin " + Str(s.epoch) + " " + Str(s.batch) + " step " + Str(s.step()), s);
  }
  void OnBatchEnd(TrainingState& s) override {
    Add("batch_end " + Str(s.epoch) + " " + Str(s.batch) + " step " + Str(s.step()), s);
    batch_losses.push_back(s.last_batch_loss);
  }

  std::vector<std::string> events;
  std::vector<EpochLogs> epoch_logs;
  std::vector<double> batch_losses;
  int64_t batches_per_epoch = -1, samples_per_epoch = -1;

 private:
  static std::string Str(int64_t v) { return std::to_string(v); }
  void Add(std::string event, const TrainingState& s) {
    EXPECT_NE(s.model, nullptr);
    EXPECT_NE(s.optimizer, nullptr);
    EXPECT_NE(s.loss, nullptr);
    EXPECT_NE(s.options, nullptr);
    EXPECT_NE(s.history, nullptr);
    events.push_back(std::move(event));
  }
};

// Sets stop_training in OnBatchEnd once the global step reaches `at_step`,
// remembering where training stood.
class StopAtStep : public Callback {
 public:
  explicit StopAtStep(int64_t at_step) : at_step_(at_step) {}
  void OnBatchEnd(TrainingState& s) override {
    if (s.step() == at_step_) {
      s.stop_training = true;
      epoch = s.epoch;
      batch = s.batch;
      metrics = s.metrics;
    }
  }
  int epoch = -1;
  int64_t batch = -1;
  EpochAccumulators metrics;

 private:
  int64_t at_step_;
};

struct CallbackError {
  int64_t step;
};

class ThrowAtStep : public Callback {
 public:
  explicit ThrowAtStep(int64_t at_step) : at_step_(at_step) {}
  void OnBatchEnd(TrainingState& s) override {
    if (s.step() == at_step_) throw CallbackError{s.step()};
  }

 private:
  int64_t at_step_;
};

// Moves the start position in OnTrainBegin, as a checkpoint-restore callback does.
class MoveStart : public Callback {
 public:
  MoveStart(int epoch, int64_t batch, EpochAccumulators metrics)
      : epoch_(epoch), batch_(batch), metrics_(metrics) {}
  void OnTrainBegin(TrainingState& s) override {
    s.epoch = epoch_;
    s.batch = batch_;
    s.metrics = metrics_;
  }

 private:
  int epoch_;
  int64_t batch_;
  EpochAccumulators metrics_;
};

// ---------------------------------------------------------------------------

TEST(GatherRowsTest, CopiesRowsInOrder) {
  Dataset ds;
  ds.x = RandomMatrix(5, 3, -1, 1, 1);
  ds.y = RandomMatrix(5, 2, -1, 1, 2);
  const std::vector<uint32_t> order = {4, 2, 0, 1, 3};
  Matrix x, y;
  GatherRows(ds, order, Range{1, 4}, &x, &y);
  ASSERT_EQ(x.rows(), 3);
  ASSERT_EQ(x.cols(), 3);
  ASSERT_EQ(y.rows(), 3);
  ASSERT_EQ(y.cols(), 2);
  const int expected[] = {2, 0, 1};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Matrix(x.row(i)), Matrix(ds.x.row(expected[i]))) << i;
    EXPECT_EQ(Matrix(y.row(i)), Matrix(ds.y.row(expected[i]))) << i;
  }
  GatherRows(ds, order, Range{2, 2}, &x, &y);
  EXPECT_EQ(x.rows(), 0);
  EXPECT_EQ(y.rows(), 0);
}

TEST(FitTest, ClassificationLossDecreases) {
  const Dataset data = MakeBlobs(210, 1);
  Trainee t = MakeClassifier(3);
  const EvalResult before = Evaluate(*t.model, kCrossEntropy, data);
  History h = Fit(*t.model, *t.optimizer, kCrossEntropy, data, Options(15, 32));
  ASSERT_EQ(h.epochs.size(), 15u);
  for (size_t e = 0; e < h.epochs.size(); ++e) {
    EXPECT_EQ(h.epochs[e].epoch, static_cast<int>(e));
    EXPECT_EQ(h.epochs[e].samples, 210);
    EXPECT_TRUE(h.epochs[e].complete);
    EXPECT_GE(h.epochs[e].accuracy, 0.0);
    EXPECT_LE(h.epochs[e].accuracy, 1.0);
    EXPECT_TRUE(std::isfinite(h.epochs[e].loss));
    EXPECT_GE(h.epochs[e].seconds, 0.0);
  }
  EXPECT_LT(h.epochs.back().loss, 0.5 * h.epochs.front().loss);
  EXPECT_EQ(t.optimizer->iterations(), 15 * 7);
  const EvalResult after = Evaluate(*t.model, kCrossEntropy, data);
  EXPECT_LT(after.loss, 0.5 * before.loss);
  EXPECT_GT(after.accuracy, 0.85);
  EXPECT_EQ(after.samples, 210);
}

TEST(FitTest, RegressionLossDecreases) {
  const Dataset data = MakeLinear(200, 2);
  Sequential model(2);
  model.Add<Dense>(8).Add<ReLU>().Add<Dense>(1);
  model.Build(4);
  Adam adam(0.01f);
  adam.Build(model.store().size());
  MeanSquaredError mse;
  History h = Fit(model, adam, mse, data, Options(20, 20));
  ASSERT_EQ(h.epochs.size(), 20u);
  EXPECT_LT(h.epochs.back().loss, 0.2 * h.epochs.front().loss);
  EXPECT_TRUE(std::isnan(h.epochs.back().accuracy));
  const EvalResult eval = Evaluate(model, mse, data, 64);
  EXPECT_LT(eval.loss, 0.1);
  EXPECT_TRUE(std::isnan(eval.accuracy));
}

TEST(FitTest, CallbacksAreCalledInOrder) {
  const Dataset data = MakeBlobs(10, 3);
  Trainee t = MakeClassifier(1);
  Recorder rec;
  FitOptions o = Options(2, 4);  // batches of 4, 4, 2
  o.callbacks = {&rec};
  History h = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);

  std::vector<std::string> expected = {"train_begin"};
  int64_t step = 0;
  for (int e = 0; e < 2; ++e) {
    expected.push_back("epoch_begin " + std::to_string(e));
    for (int b = 0; b < 3; ++b) {
      const std::string eb = std::to_string(e) + " ";
      expected.push_back("batch_begin " + eb + std::to_string(b) + " step " + std::to_string(step));
      ++step;
      // In OnBatchEnd the batch just run is done: state.batch is the next one.
      expected.push_back("batch_end " + eb + std::to_string(b + 1) + " step " +
                         std::to_string(step));
    }
    expected.push_back("epoch_end " + std::to_string(e) + " logs " + std::to_string(e));
  }
  expected.push_back("train_end");
  EXPECT_EQ(rec.events, expected);
  EXPECT_EQ(rec.batches_per_epoch, 3);
  EXPECT_EQ(rec.samples_per_epoch, 10);
  ASSERT_EQ(h.epochs.size(), 2u);
  ASSERT_EQ(rec.epoch_logs.size(), 2u);
  EXPECT_EQ(rec.epoch_logs[1].epoch, 1);
  EXPECT_EQ(rec.epoch_logs[1].samples, 10);
  EXPECT_DOUBLE_EQ(rec.epoch_logs[1].loss, h.epochs[1].loss);
  for (double l : rec.batch_losses) EXPECT_TRUE(std::isfinite(l) && l > 0) << l;
}

TEST(FitTest, EpochLogsAreMeansOfTheBatches) {
  const Dataset data = MakeBlobs(10, 3);
  Trainee t = MakeClassifier(1);
  class Sums : public Callback {
   public:
    void OnBatchEnd(TrainingState& s) override {
      // Batches of 4, 4 and 2; s.batch is the next batch to run.
      loss_sum += s.last_batch_loss * (s.batch <= 2 ? 4 : 2);
      EXPECT_EQ(s.metrics.samples, s.batch <= 2 ? 4.0 * s.batch : 10.0);
    }
    void OnEpochEnd(TrainingState& s, const EpochLogs& logs) override {
      EXPECT_NEAR(logs.loss, loss_sum / 10, 1e-6);
      EXPECT_DOUBLE_EQ(logs.loss, s.metrics.mean_loss());
      EXPECT_DOUBLE_EQ(logs.accuracy, s.metrics.accuracy());
      EXPECT_EQ(s.metrics.samples, 10.0);
      loss_sum = 0;
      ++epochs;
    }
    double loss_sum = 0;
    int epochs = 0;
  } sums;
  FitOptions o = Options(2, 4);
  o.callbacks = {&sums};
  (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  EXPECT_EQ(sums.epochs, 2);
}

TEST(FitTest, StopTrainingInOnBatchEndStopsAfterThatBatch) {
  const Dataset data = MakeBlobs(100, 4);
  Trainee t = MakeClassifier(2);
  StopAtStep stop(5);
  Recorder rec;
  FitOptions o = Options(3, 16);  // 7 batches per epoch
  o.callbacks = {&stop, &rec};
  History h = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  EXPECT_EQ(t.optimizer->iterations(), 5);
  EXPECT_EQ(stop.epoch, 0);
  EXPECT_EQ(stop.batch, 5);
  ASSERT_GE(rec.events.size(), 2u);
  EXPECT_EQ(rec.events.back(), "train_end");
  EXPECT_EQ(rec.events[rec.events.size() - 2], "batch_end 0 5 step 5");
  // The stopped epoch is in the history, marked incomplete, and not ended.
  ASSERT_EQ(h.epochs.size(), 1u);
  EXPECT_EQ(h.epochs[0].epoch, 0);
  EXPECT_FALSE(h.epochs[0].complete);
  EXPECT_EQ(h.epochs[0].samples, 5 * 16);
  EXPECT_TRUE(rec.epoch_logs.empty());
}

TEST(FitTest, StopTrainingOnTheLastBatchCompletesTheEpoch) {
  const Dataset data = MakeBlobs(100, 4);
  Trainee t = MakeClassifier(2);
  StopAtStep stop(7);
  Recorder rec;
  FitOptions o = Options(3, 16);  // 7 batches per epoch
  o.callbacks = {&stop, &rec};
  History h = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  EXPECT_EQ(t.optimizer->iterations(), 7);
  ASSERT_EQ(h.epochs.size(), 1u);
  EXPECT_TRUE(h.epochs[0].complete);
  EXPECT_EQ(h.epochs[0].samples, 100);
  EXPECT_EQ(rec.epoch_logs.size(), 1u);
}

TEST(FitTest, ExceptionFromCallbackPropagatesAfterCompletedSteps) {
  const Dataset data = MakeBlobs(100, 5);
  Trainee thrown = MakeClassifier(6, /*dropout=*/true);
  ThrowAtStep thrower(10);
  FitOptions o = Options(3, 16);
  o.callbacks = {&thrower};
  try {
    (void)Fit(*thrown.model, *thrown.optimizer, kCrossEntropy, data, o);
    FAIL() << "Fit returned normally";
  } catch (const CallbackError& e) {
    EXPECT_EQ(e.step, 10);
  }
  EXPECT_EQ(thrown.optimizer->iterations(), 10);

  // The parameters are those after step 10, as with a clean stop there.
  Trainee stopped = MakeClassifier(6, /*dropout=*/true);
  StopAtStep stop(10);
  o.callbacks = {&stop};
  (void)Fit(*stopped.model, *stopped.optimizer, kCrossEntropy, data, o);
  EXPECT_EQ(thrown.Hash(), stopped.Hash());
}

TEST(FitTest, InitialEpoch) {
  const Dataset data = MakeBlobs(50, 6);
  Trainee t = MakeClassifier(2);
  Recorder rec;
  FitOptions o = Options(3, 16);  // 4 batches per epoch
  o.initial_epoch = 1;
  o.callbacks = {&rec};
  History h = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  ASSERT_EQ(h.epochs.size(), 2u);
  EXPECT_EQ(h.epochs[0].epoch, 1);
  EXPECT_EQ(h.epochs[1].epoch, 2);
  EXPECT_EQ(t.optimizer->iterations(), 8);
  ASSERT_GE(rec.events.size(), 2u);
  EXPECT_EQ(rec.events[1], "epoch_begin 1");
}

TEST(FitTest, NothingToDoWhenAlreadyComplete) {
  const Dataset data = MakeBlobs(50, 6);
  Trainee t = MakeClassifier(2);
  const uint64_t before = t.Hash();
  FitOptions o = Options(3, 16);
  o.initial_epoch = 3;
  History h = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  EXPECT_TRUE(h.epochs.empty());
  EXPECT_EQ(t.optimizer->iterations(), 0);
  EXPECT_EQ(t.Hash(), before);
}

TEST(FitTest, InitialBatchSkipsTheFirstBatches) {
  const Dataset data = MakeBlobs(50, 6);
  Trainee t = MakeClassifier(2);
  Recorder rec;
  FitOptions o = Options(2, 16);  // 4 batches per epoch
  o.initial_epoch = 0;
  o.initial_batch = 3;
  o.callbacks = {&rec};
  History h = Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  EXPECT_EQ(t.optimizer->iterations(), 1 + 4);
  ASSERT_EQ(h.epochs.size(), 2u);
  EXPECT_EQ(h.epochs[0].samples, 2);  // only the last batch of 50 = 3 * 16 + 2
  EXPECT_EQ(h.epochs[1].samples, 50);
  ASSERT_GE(rec.events.size(), 3u);
  EXPECT_EQ(rec.events[2], "batch_begin 0 3 step 0");
}

TEST(FitTest, InconsistentOptionsThrow) {
  const Dataset data = MakeBlobs(20, 7);
  Trainee t = MakeClassifier(2);
  FitOptions zero = Options(1, 0);
  EXPECT_THROW(Fit(*t.model, *t.optimizer, kCrossEntropy, data, zero), std::invalid_argument);
  FitOptions beyond = Options(1, 8);  // 3 batches per epoch
  beyond.initial_batch = 4;
  EXPECT_THROW(Fit(*t.model, *t.optimizer, kCrossEntropy, data, beyond), std::invalid_argument);
  Dataset wrong_width;
  wrong_width.x = Matrix::Zero(20, 3);
  wrong_width.y = Matrix::Zero(20, 1);
  EXPECT_THROW(Fit(*t.model, *t.optimizer, kCrossEntropy, wrong_width, Options(1, 8)),
               std::invalid_argument);
  EXPECT_EQ(t.optimizer->iterations(), 0);
}

TEST(FitTest, DropRemainderChangesTheNumberOfBatches) {
  const Dataset data = MakeBlobs(100, 8);
  Trainee keep = MakeClassifier(2);
  Recorder keep_rec;
  FitOptions o = Options(2, 16);
  o.callbacks = {&keep_rec};
  History hk = Fit(*keep.model, *keep.optimizer, kCrossEntropy, data, o);
  EXPECT_EQ(keep.optimizer->iterations(), 2 * 7);
  EXPECT_EQ(keep_rec.batches_per_epoch, 7);
  EXPECT_EQ(keep_rec.samples_per_epoch, 100);
  EXPECT_EQ(hk.epochs[0].samples, 100);

  Trainee drop = MakeClassifier(2);
  Recorder drop_rec;
  o.drop_remainder = true;
  o.callbacks = {&drop_rec};
  History hd = Fit(*drop.model, *drop.optimizer, kCrossEntropy, data, o);
  EXPECT_EQ(drop.optimizer->iterations(), 2 * 6);
  EXPECT_EQ(drop_rec.batches_per_epoch, 6);
  EXPECT_EQ(drop_rec.samples_per_epoch, 96);
  EXPECT_EQ(hd.epochs[0].samples, 96);
}

TEST(FitTest, SameSeedSameWeightsDifferentSeedDifferentWeights) {
  const Dataset data = MakeBlobs(120, 9);
  auto run = [&](uint64_t model_seed, uint64_t fit_seed) {
    Trainee t = MakeClassifier(model_seed, /*dropout=*/true);
    (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, Options(2, 16, fit_seed));
    return t.Hash();
  };
  const uint64_t a = run(1, 10);
  EXPECT_EQ(a, run(1, 10));
  EXPECT_NE(a, run(1, 11));
  EXPECT_NE(a, run(2, 10));
}

TEST(FitTest, ShuffleFalseIgnoresTheSeedWithoutDropout) {
  const Dataset data = MakeBlobs(60, 10);
  auto run = [&](uint64_t fit_seed, bool shuffle) {
    Trainee t = MakeClassifier(1, /*dropout=*/false);
    FitOptions o = Options(2, 16, fit_seed);
    o.shuffle = shuffle;
    (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
    return t.Hash();
  };
  EXPECT_EQ(run(1, false), run(2, false));
  EXPECT_NE(run(1, true), run(2, true));
  EXPECT_NE(run(1, true), run(1, false));
}

// Runs `epochs` epochs straight and returns the trainee and its history.
std::pair<Trainee, History> Straight(const Dataset& data, const FitOptions& options,
                                     bool adam = true) {
  Trainee t = MakeClassifier(21, /*dropout=*/true, adam);
  History h = Fit(*t.model, *t.optimizer, kCrossEntropy, data, options);
  return {std::move(t), std::move(h)};
}

TEST(FitResumeTest, StopAndFitAgainIsBitIdenticalToAStraightRun) {
  const Dataset data = MakeBlobs(200, 11);
  const FitOptions straight_options = Options(3, 16);  // 13 batches per epoch, the last of 8
  for (bool adam : {true, false}) {
    SCOPED_TRACE(adam ? "adam" : "sgd+momentum");
    auto [a, ha] = Straight(data, straight_options, adam);
    ASSERT_EQ(a.optimizer->iterations(), 39);

    Trainee b = MakeClassifier(21, /*dropout=*/true, adam);
    StopAtStep stop(13 + 8);  // after batch 7 of epoch 1
    FitOptions first = straight_options;
    first.callbacks = {&stop};
    (void)Fit(*b.model, *b.optimizer, kCrossEntropy, data, first);
    ASSERT_EQ(b.optimizer->iterations(), 21);
    ASSERT_EQ(stop.epoch, 1);
    ASSERT_EQ(stop.batch, 8);
    EXPECT_NE(b.Hash(), a.Hash());

    FitOptions second = straight_options;
    second.initial_epoch = stop.epoch;
    second.initial_batch = stop.batch;
    History hb = Fit(*b.model, *b.optimizer, kCrossEntropy, data, second);
    EXPECT_EQ(b.optimizer->iterations(), 39);
    ASSERT_EQ(hb.epochs.size(), 2u);
    EXPECT_EQ(hb.epochs[0].epoch, 1);
    EXPECT_EQ(hb.epochs[0].samples, 200 - 8 * 16);
    EXPECT_EQ(hb.epochs[1].epoch, 2);
    EXPECT_EQ(0, std::memcmp(a.Params().data(), b.Params().data(), a.Params().size() * 4));
    EXPECT_EQ(a.Hash(), b.Hash());
    // The last, uninterrupted epoch has the same figures.
    EXPECT_EQ(hb.epochs[1].loss, ha.epochs[2].loss);
    EXPECT_EQ(hb.epochs[1].accuracy, ha.epochs[2].accuracy);
  }
}

TEST(FitResumeTest, RestoreCallbackMovingTheStartIsBitIdenticalWithEqualEpochFigures) {
  const Dataset data = MakeBlobs(200, 11);
  const FitOptions options = Options(3, 16);
  auto [a, ha] = Straight(data, options);

  Trainee b = MakeClassifier(21, /*dropout=*/true);
  StopAtStep stop(13 + 8);
  FitOptions first = options;
  first.callbacks = {&stop};
  (void)Fit(*b.model, *b.optimizer, kCrossEntropy, data, first);
  ASSERT_EQ(stop.epoch, 1);
  ASSERT_EQ(stop.batch, 8);
  EXPECT_EQ(stop.metrics.samples, 8 * 16);

  // What a checkpoint holds, copied into fresh objects built differently.
  Trainee c = MakeClassifier(999, /*dropout=*/true);
  ASSERT_EQ(c.model->store().size(), b.model->store().size());
  std::memcpy(c.model->store().params().data(), b.model->store().params().data(),
              b.model->store().params().size_bytes());
  c.optimizer->set_iterations(b.optimizer->iterations());
  std::vector<OptimizerSlot> from = b.optimizer->slots(), to = c.optimizer->slots();
  ASSERT_EQ(from.size(), to.size());
  for (size_t i = 0; i < from.size(); ++i) {
    ASSERT_EQ(from[i].values.size(), to[i].values.size());
    std::memcpy(to[i].values.data(), from[i].values.data(), from[i].values.size_bytes());
  }

  MoveStart restore(stop.epoch, stop.batch, stop.metrics);
  Recorder rec;
  FitOptions second = options;  // initial_epoch 0: the callback decides
  second.callbacks = {&restore, &rec};
  History hc = Fit(*c.model, *c.optimizer, kCrossEntropy, data, second);
  EXPECT_EQ(c.optimizer->iterations(), 39);
  EXPECT_EQ(a.Hash(), c.Hash());
  ASSERT_GE(rec.events.size(), 3u);
  EXPECT_EQ(rec.events[1], "epoch_begin 1");
  EXPECT_EQ(rec.events[2], "batch_begin 1 8 step 21");
  // With the accumulators restored, the resumed epoch reports the figures of
  // the uninterrupted one.
  ASSERT_EQ(hc.epochs.size(), 2u);
  EXPECT_EQ(hc.epochs[0].epoch, 1);
  EXPECT_EQ(hc.epochs[0].samples, 200);
  EXPECT_DOUBLE_EQ(hc.epochs[0].loss, ha.epochs[1].loss);
  EXPECT_DOUBLE_EQ(hc.epochs[0].accuracy, ha.epochs[1].accuracy);
  EXPECT_DOUBLE_EQ(hc.epochs[1].loss, ha.epochs[2].loss);
}

TEST(FitResumeTest, ResumeAtAnEpochBoundary) {
  const Dataset data = MakeBlobs(200, 11);
  const FitOptions options = Options(3, 16);
  auto [a, ha] = Straight(data, options);

  Trainee b = MakeClassifier(21, /*dropout=*/true);
  StopAtStep stop(13);  // the last batch of epoch 0
  FitOptions first = options;
  first.callbacks = {&stop};
  (void)Fit(*b.model, *b.optimizer, kCrossEntropy, data, first);
  ASSERT_EQ(b.optimizer->iterations(), 13);
  FitOptions second = options;
  second.initial_epoch = stop.epoch;
  second.initial_batch = stop.batch;
  History hb = Fit(*b.model, *b.optimizer, kCrossEntropy, data, second);
  EXPECT_EQ(b.optimizer->iterations(), 39);
  EXPECT_EQ(a.Hash(), b.Hash());
  ASSERT_FALSE(hb.epochs.empty());
  EXPECT_EQ(hb.epochs.back().epoch, 2);
}

// ---------------------------------------------------------------------------
// Evaluate

TEST(EvaluateTest, MatchesManualComputation) {
  Trainee t = MakeClassifier(5, /*dropout=*/true);
  Dataset data = MakeBlobs(5, 12);
  // Labels chosen from the model's own predictions: 3 right, 2 wrong.
  const Matrix out = t.model->Forward(data.x, StepContext{});
  for (int i = 0; i < 5; ++i) {
    Eigen::Index argmax;
    out.row(i).maxCoeff(&argmax);
    data.y(i, 0) = static_cast<float>(i < 3 ? argmax : (argmax + 1) % 3);
  }
  const double expected_loss = kCrossEntropy.Compute(out, data.y, 1.0f, nullptr) / 5;
  for (int64_t batch : {1, 2, 5, 1000}) {
    const EvalResult r = Evaluate(*t.model, kCrossEntropy, data, batch);
    EXPECT_EQ(r.samples, 5) << batch;
    EXPECT_DOUBLE_EQ(r.accuracy, 0.6) << batch;
    EXPECT_NEAR(r.loss, expected_loss, 1e-6 * expected_loss) << batch;
  }
}

TEST(EvaluateTest, AccuracyInUnitIntervalAndDoesNotTouchParameters) {
  Trainee t = MakeClassifier(5, /*dropout=*/true);
  const Dataset data = MakeBlobs(90, 13);
  const uint64_t before = t.Hash();
  const EvalResult r = Evaluate(*t.model, kCrossEntropy, data, 32);
  EXPECT_GE(r.accuracy, 0.0);
  EXPECT_LE(r.accuracy, 1.0);
  EXPECT_GT(r.loss, 0.0);
  EXPECT_EQ(r.samples, 90);
  EXPECT_EQ(before, t.Hash());
  // Inference mode: no dropout, so repeated evaluations agree exactly.
  const EvalResult again = Evaluate(*t.model, kCrossEntropy, data, 32);
  EXPECT_EQ(r.loss, again.loss);
}

// ---------------------------------------------------------------------------
// Callbacks

TEST(CsvLoggerTest, HeaderOnceAndOneRowPerEpoch) {
  TempDir dir;
  const std::string path = dir.File("log.csv");
  const Dataset data = MakeBlobs(40, 14);
  Trainee t = MakeClassifier(2);
  {
    CsvLogger logger(path);
    FitOptions o = Options(3, 16);
    o.callbacks = {&logger};
    (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  }
  {
    // A resumed run appends to the same file without a second header.
    CsvLogger logger(path);
    FitOptions o = Options(4, 16);
    o.initial_epoch = 3;
    o.callbacks = {&logger};
    (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  }
  std::istringstream in(ReadFileToString(path));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 5u) << ReadFileToString(path);
  EXPECT_EQ(lines[0], "epoch,loss,accuracy,samples,seconds");
  for (int e = 0; e < 4; ++e) {
    const std::string& row = lines[e + 1];
    EXPECT_EQ(row.rfind(std::to_string(e) + ",", 0), 0u) << row;
    EXPECT_EQ(std::count(row.begin(), row.end(), ','), 4) << row;
    EXPECT_NE(row.find(",40,"), std::string::npos) << row;
  }
}

TEST(CsvLoggerTest, UnopenableFileThrowsOutOfFit) {
  TempDir dir;
  const Dataset data = MakeBlobs(40, 14);
  Trainee t = MakeClassifier(2);
  CsvLogger logger(dir.File("no/such/dir/log.csv"));
  FitOptions o = Options(1, 16);
  o.callbacks = {&logger};
  EXPECT_THROW((void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o), std::runtime_error);
  EXPECT_EQ(t.optimizer->iterations(), 0);
}

TEST(ProgressBarTest, OneLinePerEpochWhenNotATerminal) {
  const Dataset data = MakeBlobs(40, 15);
  Trainee t = MakeClassifier(2);
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    ProgressBar bar(/*quiet=*/false, out);
    FitOptions o = Options(3, 16);
    o.callbacks = {&bar};
    (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  }
  std::fflush(out);
  std::rewind(out);
  std::string text;
  for (int c; (c = std::fgetc(out)) != EOF;) text.push_back(static_cast<char>(c));
  std::fclose(out);
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3) << text;
  EXPECT_NE(text.find("loss"), std::string::npos) << text;
}

TEST(ProgressBarTest, QuietPrintsNothing) {
  const Dataset data = MakeBlobs(40, 15);
  Trainee t = MakeClassifier(2);
  std::FILE* out = std::tmpfile();
  ASSERT_NE(out, nullptr);
  {
    ProgressBar bar(/*quiet=*/true, out);
    FitOptions o = Options(2, 16);
    o.callbacks = {&bar};
    (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  }
  std::fflush(out);
  EXPECT_EQ(std::ftell(out), 0);
  std::fclose(out);
}

// ---------------------------------------------------------------------------
// The Replica seam

class CountingReplica : public Replica {
 public:
  using Replica::Replica;
  void BeginTraining(Sequential&, Optimizer&, const Loss&, const Dataset&,
                     const FitOptions&) override {
    ++begin_calls;
  }
  GradientsReadyFn BeginStepSync(std::span<const double> metrics) override {
    ++metric_calls;
    EXPECT_FALSE(metrics.empty());
    return [this](size_t begin, size_t end) {
      EXPECT_LE(begin, end);
      ++ready_calls;
    };
  }
  void FinishStepSync(std::span<float> grads, std::span<double> metrics) override {
    Replica::FinishStepSync(grads, metrics);
    ++finish_calls;
    grads_size = grads.size();
  }
  void ShareRows(std::span<std::byte> rows, std::span<const size_t> offsets,
                 std::span<double> metrics) override {
    Replica::ShareRows(rows, offsets, metrics);
    ++row_calls;
    EXPECT_FALSE(metrics.empty());
    // One replica: its part is the step line alone (no rows travel).
    EXPECT_EQ(std::vector<size_t>(offsets.begin(), offsets.end()),
              (std::vector<size_t>{0, kStepLineBytes}));
  }
  void ShareGradients(std::span<float> grads, std::span<const size_t> cuts) override {
    ++gradient_calls;
    grads_size = grads.size();
    EXPECT_EQ(std::vector<size_t>(cuts.begin(), cuts.end()),
              (std::vector<size_t>{0, grads.size()}));
  }
  int begin_calls = 0, ready_calls = 0, finish_calls = 0, metric_calls = 0;
  int row_calls = 0, gradient_calls = 0;
  size_t grads_size = 0;
};

TEST(ReplicaTest, FitCallsTheSeam) {
  const Dataset data = MakeBlobs(50, 16);
  for (bool invariant : {false, true}) {
    SCOPED_TRACE(invariant ? "layout-invariant" : "float path");
    Trainee t = MakeClassifier(2);
    CountingReplica replica(LayoutOptions{.invariant = invariant});
    FitOptions o = Options(2, 16);  // 4 batches per epoch
    o.replica = &replica;
    (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
    EXPECT_EQ(replica.begin_calls, 1);
    EXPECT_EQ(replica.grads_size, t.model->store().size());
    if (invariant) {
      EXPECT_EQ(replica.row_calls, 8);
      EXPECT_EQ(replica.gradient_calls, 8);
      EXPECT_EQ(replica.finish_calls + replica.metric_calls, 0);
    } else {
      EXPECT_EQ(replica.finish_calls, 8);
      EXPECT_GE(replica.ready_calls, 8);
      EXPECT_GE(replica.metric_calls, 8);
      EXPECT_EQ(replica.row_calls + replica.gradient_calls, 0);
    }
  }
}

// A raised control word is agreed at the end of the next step, then cleared.
class RaiseStopAtStep : public Callback {
 public:
  explicit RaiseStopAtStep(int64_t step) : step_(step) {}
  void OnBatchBegin(TrainingState& s) override {
    if (s.step() == step_) s.replica->RequestStop();
  }
  void OnBatchEnd(TrainingState& s) override {
    seen.push_back(s.replica->control().stop_requests);
    if (s.replica->control().stop_requests > 0) s.stop_training = true;
  }
  std::vector<int> seen;

 private:
  int64_t step_;
};

TEST(ReplicaTest, ControlWordsReachTheNextStepEnd) {
  const Dataset data = MakeBlobs(50, 16);
  Trainee t = MakeClassifier(2);
  RaiseStopAtStep stop(5);
  FitOptions o = Options(3, 16);
  o.callbacks = {&stop};
  (void)Fit(*t.model, *t.optimizer, kCrossEntropy, data, o);
  EXPECT_EQ(t.optimizer->iterations(), 6);  // step 5 (0-based) finished, then stopped
  EXPECT_EQ(stop.seen, (std::vector<int>{0, 0, 0, 0, 0, 1}));
}

// Ranks as threads in one process: gradients and metrics are summed through
// shared buffers, in rank order, so every rank gets the same sums.
class ThreadGroup {
 public:
  explicit ThreadGroup(int world)
      : world_(world), barrier_(world), grads_(world), metrics_(world), parts_(world) {}
  int world() const { return world_; }

  void Sum(int rank, std::span<float> values) { Reduce(rank, values, grads_, std::plus<>()); }
  void Sum(int rank, std::span<double> values) { Reduce(rank, values, metrics_, std::plus<>()); }
  // Every rank r's bytes [offsets[r], offsets[r+1]) of `buffer` reach every rank.
  void Gather(int rank, std::span<std::byte> buffer, std::span<const size_t> offsets) {
    parts_[rank] = buffer.data();
    barrier_.arrive_and_wait();
    for (int r = 0; r < world_; ++r) {
      if (r != rank) {
        std::memcpy(buffer.data() + offsets[r], parts_[r] + offsets[r],
                    offsets[r + 1] - offsets[r]);
      }
    }
    barrier_.arrive_and_wait();
  }

 private:
  template <typename T, typename Op>
  void Reduce(int rank, std::span<T> values, std::vector<std::vector<T>>& slots, Op op) {
    slots[rank].assign(values.begin(), values.end());
    barrier_.arrive_and_wait();
    for (size_t i = 0; i < values.size(); ++i) {
      T acc = slots[0][i];
      for (int r = 1; r < world_; ++r) acc = op(acc, slots[r][i]);
      values[i] = acc;
    }
    barrier_.arrive_and_wait();
  }

  int world_;
  std::barrier<> barrier_;
  std::vector<std::vector<float>> grads_;
  std::vector<std::vector<double>> metrics_;
  std::vector<std::byte*> parts_;
};

// A Replica written against the seam alone: both the float path (a sum of
// gradients) and the layout-invariant one (rows and gradient shares gathered).
class ThreadReplica : public Replica {
 public:
  ThreadReplica(ThreadGroup* group, int rank, LayoutOptions layout)
      : Replica(layout), group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return group_->world(); }
  void FinishStepSync(std::span<float> grads, std::span<double> metrics) override {
    group_->Sum(rank_, grads);
    group_->Sum(rank_, metrics);
    AgreeWithItself();  // the control words, kept local
  }
  void ShareRows(std::span<std::byte> rows, std::span<const size_t> offsets,
                 std::span<double> metrics) override {
    group_->Gather(rank_, rows, offsets);
    group_->Sum(rank_, metrics);
    AgreeWithItself();
  }
  void ShareGradients(std::span<float> grads, std::span<const size_t> cuts) override {
    std::vector<size_t> bytes(cuts.begin(), cuts.end());
    for (size_t& b : bytes) b *= sizeof(float);
    group_->Gather(rank_, std::as_writable_bytes(grads), bytes);
  }
  void SumMetrics(std::span<double> values) override { group_->Sum(rank_, values); }

 private:
  ThreadGroup* group_;
  int rank_;
};

// 3 ranks split batches of 10 as 4/3/3 (and the last batch of 5 as 2/2/1);
// dropout masks are keyed by global rows.
struct ThreeReplicaRun {
  std::vector<Trainee> trainees;
  std::vector<History> histories;
  std::vector<EvalResult> evals;
};
ThreeReplicaRun TrainThreeReplicas(const Dataset& data, const FitOptions& options,
                                   LayoutOptions layout) {
  constexpr int kWorld = 3;
  ThreadGroup group(kWorld);
  ThreeReplicaRun run;
  run.histories.resize(kWorld);
  run.evals.resize(kWorld);
  for (int r = 0; r < kWorld; ++r) run.trainees.push_back(MakeClassifier(8, true, false));
  std::vector<std::thread> threads;
  for (int r = 0; r < kWorld; ++r) {
    threads.emplace_back([&, r] {
      ThreadReplica replica(&group, r, layout);
      FitOptions o = options;
      o.replica = &replica;
      run.histories[r] =
          Fit(*run.trainees[r].model, *run.trainees[r].optimizer, kCrossEntropy, data, o);
      run.evals[r] = Evaluate(*run.trainees[r].model, kCrossEntropy, data, 8, &replica);
    });
  }
  for (std::thread& t : threads) t.join();
  return run;
}

TEST(ReplicaTest, ThreeThreadReplicasTrainLikeOneProcess) {
  // The opt-out: the sum of the replicas' gradients is the single-process
  // gradient up to float rounding.
  const Dataset data = MakeBlobs(45, 17);
  const FitOptions options = Options(2, 10);
  const LayoutOptions float_path{.invariant = false};
  Trainee single = MakeClassifier(8, /*dropout=*/true, /*adam=*/false);
  Replica one_process(float_path);
  FitOptions single_options = options;
  single_options.replica = &one_process;
  History hs = Fit(*single.model, *single.optimizer, kCrossEntropy, data, single_options);
  const EvalResult es = Evaluate(*single.model, kCrossEntropy, data, 8, &one_process);

  const ThreeReplicaRun run = TrainThreeReplicas(data, options, float_path);
  const std::vector<float> expected = single.Params();
  for (int r = 0; r < 3; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(run.trainees[r].Hash(), run.trainees[0].Hash()) << "replicas diverged";
    const std::vector<float> got = run.trainees[r].Params();
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], expected[i], 1e-4) << i;
    ASSERT_EQ(run.histories[r].epochs.size(), 2u);
    EXPECT_EQ(run.histories[r].epochs[1].samples, 45);
    EXPECT_NEAR(run.histories[r].epochs[1].loss, hs.epochs[1].loss, 1e-5);
    EXPECT_EQ(run.evals[r].samples, 45);
    EXPECT_NEAR(run.evals[r].loss, es.loss, 1e-4);
  }
}

TEST(ReplicaTest, ThreeInvariantReplicasTrainBitForBitLikeOneProcess) {
  // The default: the same bits as one process, losses and evaluation included.
  const Dataset data = MakeBlobs(45, 17);
  const FitOptions options = Options(2, 10);
  Trainee single = MakeClassifier(8, /*dropout=*/true, /*adam=*/false);
  History hs = Fit(*single.model, *single.optimizer, kCrossEntropy, data, options);
  const EvalResult es = Evaluate(*single.model, kCrossEntropy, data, 8);

  const ThreeReplicaRun run = TrainThreeReplicas(data, options, LayoutOptions{});
  for (int r = 0; r < 3; ++r) {
    SCOPED_TRACE("rank " + std::to_string(r));
    EXPECT_EQ(run.trainees[r].Params(), single.Params());
    ASSERT_EQ(run.histories[r].epochs.size(), 2u);
    for (int e = 0; e < 2; ++e) {
      EXPECT_EQ(run.histories[r].epochs[e].loss, hs.epochs[e].loss);
      EXPECT_EQ(run.histories[r].epochs[e].accuracy, hs.epochs[e].accuracy);
    }
    EXPECT_EQ(run.evals[r].loss, es.loss);
    EXPECT_EQ(run.evals[r].accuracy, es.accuracy);
  }
}

}  // namespace
}  // namespace holdfast

namespace holdfast {
namespace {

// A layer with a parameter that knows only the float gradient path; it may
// report where its parameter lies, or not.
class FloatOnlyScale final : public Layer {
 public:
  explicit FloatOnlyScale(bool reports_range) : reports_range_(reports_range) {}
  std::string kind() const override { return "scale"; }
  size_t param_begin() const override {
    return reports_range_ ? store_->tensors()[tensor_].offset : 0;
  }
  size_t param_end() const override { return reports_range_ ? param_begin() + 1 : 0; }
  int Build(int width, int index, ParameterStore* store) override {
    store_ = store;
    tensor_ = store->Declare("scale_" + std::to_string(index) + "/w", {1});
    return width;
  }
  void Initialize(uint64_t) override { *store_->param(tensor_) = 1.0f; }
  void Forward(const Matrix& x, Matrix* y, const StepContext&) override {
    *y = x * *store_->param(tensor_);
  }
  void Backward(const Matrix& x, const Matrix&, const Matrix& dy, Matrix* dx) override {
    *store_->grad(tensor_) = x.cwiseProduct(dy).sum();
    if (dx != nullptr) *dx = dy * *store_->param(tensor_);
  }

 private:
  bool reports_range_;
  ParameterStore* store_ = nullptr;
  size_t tensor_ = 0;
};

// In layout-invariant mode such a layer would train on stale gradients: a bug
// the run stops on, naming the tensor or the layer, and the way out.
TEST(LayoutInvariantDeathTest, ALayerWithoutAnExactGradientStopsTheRun) {
  const Dataset data = MakeBlobs(20, 3);
  auto train = [&](bool invariant, bool reports_range) {
    Sequential model(static_cast<int>(data.x.cols()));
    model.Add<FloatOnlyScale>(reports_range).Add<Dense>(3);
    model.Build(1);
    SGD sgd(0.1f);
    sgd.Build(model.store().size());
    Replica replica(LayoutOptions{.invariant = invariant});
    FitOptions o = Options(1, 10);
    o.replica = &replica;
    Fit(model, sgd, kCrossEntropy, data, o);
  };
  train(false, false);  // fine on the float path
  train(false, true);
  EXPECT_DEATH(train(true, false),
               "no layout-invariant gradient is formed for scale_0/w.*"
               "--layout-invariant off");
  EXPECT_DEATH(train(true, true),
               "scale layer has parameters but no layout-invariant gradient.*"
               "--layout-invariant off");
}

}  // namespace
}  // namespace holdfast
