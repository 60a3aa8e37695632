#include "core/fit.h"

#include <chrono>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

#include "core/exact_sum.h"

namespace holdfast {
namespace {

void Validate(const Sequential& model, const Dataset& data, const FitOptions& o) {
  auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
  if (o.batch_size <= 0) fail("batch size must be positive");
  if (o.epochs < 0) fail("epochs must not be negative");
  if (data.size() == 0) fail("training data is empty");
  if (data.size() >= (int64_t{1} << 32)) fail("training data has 2^32 or more samples");
  if (data.x.cols() != model.input_width()) {
    fail("data has " + std::to_string(data.x.cols()) + " features, model expects " +
         std::to_string(model.input_width()));
  }
  if (data.y.rows() != data.size()) fail("data has different numbers of inputs and targets");
}

// Sums of one batch, in the layout passed to Replica::SumMetrics.
enum MetricIndex { kLossSum = 0, kCorrect, kSamples, kNumMetrics };

// The sum of a batch's row losses: in layout-invariant mode on the metric
// grid, where the sum of any split of the rows adds up to the same bits.
double LossSum(const Loss& loss, const Matrix& output, const Matrix& target, float scale,
               Matrix* grad, bool invariant, std::vector<double>* rows) {
  if (!invariant) return loss.Compute(output, target, scale, grad);
  rows->resize(static_cast<size_t>(output.rows()));
  loss.Compute(output, target, scale, grad, rows->data());
  double sum = 0;
  for (double r : *rows) sum += RoundToMetricGrid(r);
  return sum;
}

}  // namespace

void GatherRows(const Dataset& data, std::span<const uint32_t> order, Range range, Matrix* x,
                Matrix* y) {
  const int64_t xc = data.x.cols(), yc = data.y.cols();
  x->resize(range.size(), xc);
  y->resize(range.size(), yc);
  for (int64_t i = 0; i < range.size(); ++i) {
    const int64_t src = order[range.begin + i];
    std::memcpy(x->data() + i * xc, data.x.data() + src * xc, sizeof(float) * xc);
    std::memcpy(y->data() + i * yc, data.y.data() + src * yc, sizeof(float) * yc);
  }
}

Trainer::Trainer(Sequential& model, Optimizer& optimizer, const Loss& loss, const Dataset& data,
                 const FitOptions& options)
    : model_(model),
      optimizer_(optimizer),
      loss_(loss),
      data_(data),
      seed_(options.seed),
      replica_(options.replica != nullptr ? options.replica : &single_process_) {
  Validate(model, data, options);
  replica_->BeginTraining(model, optimizer, loss, data, options);
}

StepMetrics Trainer::Step(std::span<const uint32_t> order, Range batch) {
  const bool invariant = replica_->layout().invariant;
  const int world = replica_->world_size();
  const Range slice = ReplicaSlice(batch.size(), replica_->rank(), world);
  GatherRows(data_, order, {batch.begin + slice.begin, batch.begin + slice.end}, &x_, &y_);

  StepContext ctx;
  ctx.training = true;
  ctx.seed = seed_;
  ctx.step = optimizer_.iterations();
  ctx.first_row = slice.begin;
  ctx.fixed_order = invariant;
  const Matrix& output = model_.Forward(x_, ctx);
  // Scaling by the global batch size makes the replicas' gradient sum the
  // gradient of the global batch's mean loss, however it is split.
  double sums[kNumMetrics];
  sums[kLossSum] = LossSum(loss_, output, y_, 1.0f / static_cast<float>(batch.size()), &doutput_,
                           invariant, &row_losses_);
  sums[kCorrect] = static_cast<double>(loss_.CountCorrect(output, y_).value_or(0));
  sums[kSamples] = static_cast<double>(slice.size());
  if (invariant) {
    model_.Backward(doutput_);  // input gradients only
    // The parameter gradients need the whole batch's input rows (x_ when alone).
    if (world > 1) GatherRows(data_, order, batch, &global_x_, &global_y_);
    gathered_.Compute(model_, world > 1 ? global_x_ : x_, *replica_, sums);
  } else {
    model_.Backward(doutput_, replica_->BeginStepSync(sums));
    replica_->FinishStepSync(model_.store().grads(), sums);
  }
  optimizer_.Apply(model_.store().params(), model_.store().grads());
  return {sums[kLossSum], sums[kCorrect], sums[kSamples]};
}

History Fit(Sequential& model, Optimizer& optimizer, const Loss& loss, const Dataset& data,
            const FitOptions& options) {
  Trainer trainer(model, optimizer, loss, data, options);
  Replica& replica = trainer.replica();
  const BatchPlan plan(data.size(), options.batch_size, options.drop_remainder);
  if (plan.num_batches() == 0) throw std::invalid_argument("batch size larger than the data");

  History history;
  TrainingState state;
  state.model = &model;
  state.optimizer = &optimizer;
  state.loss = &loss;
  state.options = &options;
  state.replica = &replica;
  state.epoch = options.initial_epoch;
  state.batch = options.initial_batch;
  state.batches_per_epoch = plan.num_batches();
  state.samples_per_epoch =
      options.drop_remainder ? plan.num_batches() * plan.batch_size() : plan.num_samples();
  state.history = &history;

  for (Callback* cb : options.callbacks) cb->OnTrainBegin(state);
  if (state.batch < 0 || state.batch > plan.num_batches()) {
    throw std::invalid_argument("initial batch " + std::to_string(state.batch) +
                                " outside the epoch's " + std::to_string(plan.num_batches()) +
                                " batches");
  }
  if (state.batch == plan.num_batches()) {  // resumed exactly at an epoch's end
    ++state.epoch;
    state.batch = 0;
  }

  const uint32_t n = static_cast<uint32_t>(data.size());
  std::vector<uint32_t> order(n);
  while (state.epoch < options.epochs && !state.stop_training) {
    if (options.shuffle) {
      order = EpochPermutation(options.seed, state.epoch, n);
    } else {
      std::iota(order.begin(), order.end(), 0u);
    }
    if (state.batch == 0) state.metrics = {};
    const auto start = std::chrono::steady_clock::now();
    for (Callback* cb : options.callbacks) cb->OnEpochBegin(state);

    while (state.batch < plan.num_batches() && !state.stop_training) {
      for (Callback* cb : options.callbacks) cb->OnBatchBegin(state);
      const StepMetrics m = trainer.Step(order, plan.Batch(state.batch));
      state.metrics.loss_sum += m.loss_sum;
      state.metrics.correct += m.correct;
      state.metrics.samples += m.samples;
      state.last_batch_loss = m.loss_sum / m.samples;
      ++state.batch;
      for (Callback* cb : options.callbacks) cb->OnBatchEnd(state);
    }

    EpochLogs logs;
    logs.epoch = state.epoch;
    logs.loss = state.metrics.mean_loss();
    if (loss.has_accuracy()) logs.accuracy = state.metrics.accuracy();
    logs.samples = static_cast<int64_t>(state.metrics.samples);
    logs.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    logs.complete = state.batch == plan.num_batches();
    history.epochs.push_back(logs);
    // A stopped epoch is in History but is not "ended": epoch-end hooks (such
    // as saving at epoch boundaries) only see complete epochs.
    if (!logs.complete) break;
    for (Callback* cb : options.callbacks) cb->OnEpochEnd(state, logs);
    ++state.epoch;
    state.batch = 0;
  }
  for (Callback* cb : options.callbacks) cb->OnTrainEnd(state);
  return history;
}

EvalResult Evaluate(Sequential& model, const Loss& loss, const Dataset& data, int64_t batch_size,
                    Replica* replica) {
  Replica single_process;
  Replica& r = replica != nullptr ? *replica : single_process;
  if (batch_size <= 0) throw std::invalid_argument("batch size must be positive");
  if (data.x.cols() != model.input_width()) {
    throw std::invalid_argument("data has " + std::to_string(data.x.cols()) +
                                " features, model expects " + std::to_string(model.input_width()));
  }
  const BatchPlan plan(data.size(), batch_size, /*drop_remainder=*/false);
  std::vector<uint32_t> order(static_cast<size_t>(data.size()));
  std::iota(order.begin(), order.end(), 0u);
  double sums[kNumMetrics] = {0, 0, 0};
  const bool invariant = r.layout().invariant;
  StepContext ctx;
  ctx.fixed_order = invariant;
  Matrix x, y;
  std::vector<double> row_losses;
  for (int64_t b = 0; b < plan.num_batches(); ++b) {
    const Range batch = plan.Batch(b);
    // Every row's figures are its own and the sums exact, so any split works.
    const Range slice = ReplicaSlice(batch.size(), r.rank(), r.world_size());
    GatherRows(data, order, {batch.begin + slice.begin, batch.begin + slice.end}, &x, &y);
    const Matrix& output = model.Forward(x, ctx);
    sums[kLossSum] += LossSum(loss, output, y, 1.0f, nullptr, invariant, &row_losses);
    sums[kCorrect] += static_cast<double>(loss.CountCorrect(output, y).value_or(0));
    sums[kSamples] += static_cast<double>(slice.size());
  }
  r.SumMetrics(sums);
  EvalResult result;
  result.samples = static_cast<int64_t>(sums[kSamples]);
  if (result.samples > 0) {
    result.loss = sums[kLossSum] / sums[kSamples];
    if (loss.has_accuracy()) result.accuracy = sums[kCorrect] / sums[kSamples];
  }
  return result;
}

}  // namespace holdfast
