// fit() and evaluate(): the training loop, its callbacks and its history.
//
// The loop is defined by global positions: epoch e, global batch b of the
// BatchPlan, global step = optimizer iterations. A Replica (single process by
// default; distribute/ provides the MPI one) says which slice of each global
// batch this process computes and how gradients and metrics are combined.
#pragma once

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "core/data_order.h"
#include "core/dataset.h"
#include "core/gathered_gradients.h"
#include "core/loss.h"
#include "core/optimizer.h"
#include "core/sequential.h"

namespace holdfast {

struct FitOptions;

// Words all replicas agree on at a step: each is the number of replicas that
// raised it before that step's gradients were combined.
struct StepControl {
  int stop_requests = 0;  // replicas asking the job to stop (preemption, user)
  int failures = 0;       // replicas reporting a failure
  // Replicas with asynchronous checkpoint work in flight, and replicas
  // reporting that their last one failed (checkpoint/manager.h).
  int checkpoint_busy = 0;
  int checkpoint_failed = 0;
  // Grows by one with every agreed step: tells a reader whether these words
  // are new since it last looked.
  int64_t sequence = 0;
};

// What a run's bits depend on (docs/layout-invariance.md). Part of the
// strategy: every replica of a run must use the same.
struct LayoutOptions {
  // true: the weights, losses and metrics are a function of the run alone,
  // not of threads per replica, world size or hosts: fixed-order products,
  // and every parameter gradient one chain over the global batch's rows,
  // gathered from the replicas (core/gathered_gradients.h). false: the
  // faster BLAS path and a float all-reduce, whose last bits follow the
  // layout.
  bool invariant = true;
};

// The seam between the training loop and a data-parallel strategy. This
// base class is one replica that keeps everything local; distribute/
// provides the mirrored strategy over a Communicator.
//
// Per step, Fit calls BeginStepSync (after the loss, with this replica's
// metric sums), then Backward with the returned hook, then FinishStepSync;
// in layout-invariant mode Backward, then ShareRows and ShareGradients.
class Replica {
 public:
  explicit Replica(LayoutOptions layout = {}) : layout_(layout) {}
  virtual ~Replica() = default;
  virtual int rank() const { return 0; }
  virtual int world_size() const { return 1; }
  const LayoutOptions& layout() const { return layout_; }
  // Before the first step: make every replica's model and optimizer state
  // equal to the chief's, and check that all train the same thing (throws
  // std::invalid_argument naming the difference otherwise).
  virtual void BeginTraining(Sequential& /*model*/, Optimizer& /*optimizer*/, const Loss& /*loss*/,
                             const Dataset& /*data*/, const FitOptions& /*options*/) {}
  // Starts a step's synchronisation. `metrics` are this replica's sums; the
  // returned hook (may be empty) is passed to Sequential::Backward.
  virtual GradientsReadyFn BeginStepSync(std::span<const double> /*metrics*/) { return {}; }
  // Ends it: leaves in `grads` the sum of every replica's gradients and in
  // `metrics` the sum of every replica's metrics, and agrees on control().
  virtual void FinishStepSync(std::span<float> /*grads*/, std::span<double> /*metrics*/) {
    AgreeWithItself();
  }
  // Sums small metric vectors (evaluation) over replicas, in place.
  virtual void SumMetrics(std::span<double> /*values*/) {}

  // Layout-invariant training (core/gathered_gradients.h) in place of
  // BeginStepSync and FinishStepSync; both collective.
  // ShareRows: every replica r's bytes [offsets[r], offsets[r+1]) of `rows`
  // reach every replica. The first kStepLineBytes of each part are the
  // replica's own: it sends its control words and `metrics` there, and sums
  // everyone's into control() and `metrics`, as FinishStepSync does.
  static constexpr size_t kStepLineBytes = 16 * sizeof(double);
  virtual void ShareRows(std::span<std::byte> /*rows*/, std::span<const size_t> /*offsets*/,
                         std::span<double> /*metrics*/) {
    AgreeWithItself();
  }
  // ShareGradients: every replica r's range [cuts[r], cuts[r+1]) of `grads`
  // reaches every replica.
  virtual void ShareGradients(std::span<float> /*grads*/, std::span<const size_t> /*cuts*/) {}

  // Raise a control word; it reaches every replica at the end of the next
  // step. Async-signal-safe (a lock-free atomic store).
  void RequestStop() { local_stop_.store(true, std::memory_order_relaxed); }
  void ReportFailure() { local_failure_.store(true, std::memory_order_relaxed); }
  // Levels rather than events: held until changed, counted at every step.
  // Any thread may set them. A thread that sets `failed` and then lowers
  // `busy` is seen to have done both at the same step (busy is read first,
  // and both are sequentially consistent).
  void SetCheckpointBusy(bool busy) { checkpoint_busy_.store(busy); }
  void SetCheckpointFailed(bool failed) { checkpoint_failed_.store(failed); }
  // The words agreed at the last finished step.
  const StepControl& control() const { return control_; }

 protected:
  // One replica's agreement: its own raised words become control().
  void AgreeWithItself() {
    const int64_t sequence = control_.sequence;
    control_ = TakeLocalControl();
    control_.sequence = sequence + 1;
  }
  // This replica's raised words (events are cleared as they are taken).
  StepControl TakeLocalControl() {
    StepControl c;
    c.stop_requests = local_stop_.exchange(false, std::memory_order_relaxed) ? 1 : 0;
    c.failures = local_failure_.exchange(false, std::memory_order_relaxed) ? 1 : 0;
    c.checkpoint_busy = checkpoint_busy_.load() ? 1 : 0;
    c.checkpoint_failed = checkpoint_failed_.load() ? 1 : 0;
    return c;
  }
  StepControl control_;

 private:
  std::atomic<bool> local_stop_{false}, local_failure_{false};
  std::atomic<bool> checkpoint_busy_{false}, checkpoint_failed_{false};
  LayoutOptions layout_;
};

// Running sums of the current epoch's training metrics, global over replicas.
// Part of the training state: a run resumed mid-epoch restores them so its
// epoch figures equal those of an uninterrupted run.
struct EpochAccumulators {
  double loss_sum = 0;  // sum of per-sample losses
  double correct = 0;   // correct predictions (classification losses)
  double samples = 0;   // samples seen this epoch
  double mean_loss() const { return samples > 0 ? loss_sum / samples : 0; }
  double accuracy() const { return samples > 0 ? correct / samples : 0; }
};

struct EpochLogs {
  int epoch = 0;
  double loss = 0;
  double accuracy = std::numeric_limits<double>::quiet_NaN();  // NaN: loss defines none
  int64_t samples = 0;
  double seconds = 0;    // wall time of this invocation's part of the epoch
  bool complete = true;  // false: training stopped before the epoch's last batch
};

struct History {
  // One entry per epoch trained (even partly) by this fit. Only complete
  // epochs reach Callback::OnEpochEnd.
  std::vector<EpochLogs> epochs;
};

class Callback;

// What the training loop exposes to callbacks. Callbacks may read all of it;
// in on_train_begin they may move the start position (epoch, batch, metrics)
// — that is how a restore callback resumes — and at any time they may set
// stop_training to end fit after the current batch.
struct TrainingState {
  Sequential* model = nullptr;
  Optimizer* optimizer = nullptr;
  const Loss* loss = nullptr;
  const FitOptions* options = nullptr;
  Replica* replica = nullptr;
  int epoch = 0;      // epoch in progress
  int64_t batch = 0;  // next global batch to run in that epoch
  int64_t batches_per_epoch = 0;
  int64_t samples_per_epoch = 0;
  EpochAccumulators metrics;   // running sums of the epoch in progress
  double last_batch_loss = 0;  // mean loss of the batch just finished
  bool stop_training = false;
  History* history = nullptr;
  int64_t step() const { return optimizer->iterations(); }
};

// Keras-style hooks. The default implementations do nothing. An exception
// thrown from a hook propagates out of fit() unchanged; the model and
// optimizer then hold the state after the last completed step.
class Callback {
 public:
  virtual ~Callback() = default;
  virtual void OnTrainBegin(TrainingState&) {}
  virtual void OnTrainEnd(TrainingState&) {}
  virtual void OnEpochBegin(TrainingState&) {}
  virtual void OnEpochEnd(TrainingState&, const EpochLogs&) {}
  virtual void OnBatchBegin(TrainingState&) {}
  virtual void OnBatchEnd(TrainingState&) {}
};

struct FitOptions {
  int epochs = 1;           // train until this many epochs are complete
  int64_t batch_size = 32;  // global batch size
  int initial_epoch = 0;    // resume position (a callback may override)
  int64_t initial_batch = 0;
  uint64_t seed = 0;                 // data order and dropout
  bool shuffle = true;               // false: identity order every epoch
  bool drop_remainder = false;       // drop the last partial batch of an epoch
  std::vector<Callback*> callbacks;  // not owned; called in order
  Replica* replica = nullptr;        // not owned; null = single process
};

// The global sums (over replicas) of one step's training metrics.
struct StepMetrics {
  double loss_sum = 0;  // sum of per-sample losses
  double correct = 0;   // correct predictions (classification losses)
  double samples = 0;   // rows in the global batch
};

// One data-parallel training step at a time: what Fit runs per batch, and
// what a custom training loop calls (tf.distribute's strategy.run(step)).
// The constructor is collective: it checks that every replica trains the
// same thing and gives all of them the chief's state (Replica::BeginTraining).
// `order` is the epoch's sample order (EpochPermutation); global batch
// `batch` is order[batch.begin, batch.end); this replica computes its slice,
// gradients are combined over replicas and every replica applies the same
// update. All references must outlive the Trainer.
class Trainer {
 public:
  Trainer(Sequential& model, Optimizer& optimizer, const Loss& loss, const Dataset& data,
          const FitOptions& options);
  StepMetrics Step(std::span<const uint32_t> order, Range batch);
  Replica& replica() { return *replica_; }

 private:
  Sequential& model_;
  Optimizer& optimizer_;
  const Loss& loss_;
  const Dataset& data_;
  uint64_t seed_;
  Replica single_process_;
  Replica* replica_;
  Matrix x_, y_, doutput_;      // reused across steps
  Matrix global_x_, global_y_;  // layout-invariant, several replicas: the whole batch
  std::vector<double> row_losses_;
  GatheredGradients gathered_;
};

// Trains `model` (already built) with `optimizer` (built for the model's
// store) on `data`. Throws std::invalid_argument on inconsistent options.
History Fit(Sequential& model, Optimizer& optimizer, const Loss& loss, const Dataset& data,
            const FitOptions& options);

struct EvalResult {
  double loss = 0;
  double accuracy = std::numeric_limits<double>::quiet_NaN();
  int64_t samples = 0;
};

// Mean loss and accuracy over `data` in inference mode (no dropout), in
// batches of batch_size. With a replica, each computes a slice and the sums
// are combined, so every rank returns the same global figures (in the
// replica's layout-invariant mode, the same bits for any layout). Without
// one, a single process in the default (invariant) mode.
EvalResult Evaluate(Sequential& model, const Loss& loss, const Dataset& data,
                    int64_t batch_size = 1000, Replica* replica = nullptr);

// Copies rows order[range] of `data` (in order) into x and y.
void GatherRows(const Dataset& data, std::span<const uint32_t> order, Range range, Matrix* x,
                Matrix* y);

}  // namespace holdfast
