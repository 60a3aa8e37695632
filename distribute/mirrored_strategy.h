// MirroredStrategy: synchronous data parallelism. Every rank holds the same
// model; each computes its slice of every global batch; gradients are summed
// over ranks in fused buckets of the flat gradient buffer, started while
// backward is still running; every rank then applies the identical update.
//
// Layout-invariant mode (the default, MirroredOptions::layout) moves rows
// instead (core/gathered_gradients.h): after backward, one all-gather of every
// rank's rows with the control line (ShareRows), then one of every rank's
// share of the gradients (ShareGradients).
//
// Threading: with overlap, a sync thread owned by the strategy runs the
// bucket all-reduces of a step while the training thread computes; the
// training thread uses the communicator only outside that window (between
// FinishStepSync and the next step's first bucket). Collective order (the same on every rank):
// BeginTraining's consistency check and broadcasts, then per step the bucket all-reduces in buffer
// order from the end to the start (invariant mode: ShareRows, then
// ShareGradients), then Evaluate's one metric all-reduce.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/fit.h"
#include "distribute/communicator.h"
#include "distribute/watchdog.h"

namespace holdfast::internal {
class SyncThread;
}  // namespace holdfast::internal

namespace holdfast {

enum class Overlap {
  // On when this host has a core to spare for the sync thread: more cores
  // than its ranks' compute threads. Shared-memory all-reduce is CPU work and
  // MPI polls while it waits, so without a spare core the sync thread only
  // slows backward down (measured in bench/train, see README).
  kAuto,
  kOn,   // start each bucket on the sync thread as soon as backward made it
  kOff,  // reduce everything after backward, on the training thread
};

struct MirroredOptions {
  // Gradient bytes per fused all-reduce. Bigger buckets need fewer calls,
  // smaller ones start earlier during backward and stay in cache.
  // 1 MiB was fastest in bench/allreduce's sweep (1..64 MiB) on the reference machine.
  size_t bucket_bytes = size_t{1} << 20;
  // Gradients still unsent when backward ends go as one collective when they
  // are at most this many bytes, in buckets beyond. In bench/allreduce one
  // call was fastest up to 16 MiB, and 1 MiB buckets ~2x faster than one
  // call from 64 MiB on, where Open MPI's large-message path leaves the
  // cache. A fixed rule, not a timing: the summation order, and so the bits
  // of the result on 3+ ranks, must not change between a run and its resume.
  size_t fuse_bytes = size_t{16} << 20;
  Overlap overlap = Overlap::kAuto;
  // Whether the run's bits may depend on threads, world size and hosts
  // (core/fit.h, docs/layout-invariance.md). Every rank must agree.
  LayoutOptions layout;
};

// Raised by MirroredStrategy::BeginTraining on EVERY rank at once when the
// ranks do not train the same thing, so a program may simply exit (code 2)
// on it: no rank is left waiting in a collective. (Contrast an error raised
// on one rank only, which must end the whole job: Communicator::Abort.)
class RanksDisagreeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

class MirroredStrategy final : public Replica {
 public:
  // `comm` must outlive the strategy.
  explicit MirroredStrategy(Communicator* comm, MirroredOptions options = {});
  ~MirroredStrategy() override;

  int rank() const override { return comm_->rank(); }
  int world_size() const override { return comm_->size(); }
  Communicator& communicator() { return *comm_; }

  // Checks that every rank trains the same model, optimizer, loss, data,
  // global batch and seed (RanksDisagreeError naming the first field that
  // differs, raised on every rank), then broadcasts the chief's parameters,
  // optimizer slots and step count.
  void BeginTraining(Sequential& model, Optimizer& optimizer, const Loss& loss, const Dataset& data,
                     const FitOptions& options) override;
  GradientsReadyFn BeginStepSync(std::span<const double> metrics) override;
  void FinishStepSync(std::span<float> grads, std::span<double> metrics) override;
  void SumMetrics(std::span<double> values) override;
  void ShareRows(std::span<std::byte> rows, std::span<const size_t> offsets,
                 std::span<double> metrics) override;
  void ShareGradients(std::span<float> grads, std::span<const size_t> cuts) override;

  // Seconds spent waiting for gradient all-reduces after backward, summed
  // over steps (the part not hidden behind backward).
  double exposed_sync_seconds() const { return exposed_sync_seconds_; }
  // Whether buckets overlap backward (kAuto resolved at BeginTraining; never
  // in layout-invariant mode, whose exchange runs after backward).
  bool overlapping() const { return sync_thread_ != nullptr; }
  int64_t buckets_launched() const { return buckets_launched_; }

 private:
  void OnGradientsReady(size_t begin, size_t end);
  // Launches bucket-sized pieces of [ready_lo_, launched_lo_); with `final`,
  // all of it.
  void LaunchReadyBuckets(bool final);
  void Launch(size_t lo, size_t hi);  // offsets into control_and_grads()
  // The step's control line (words, then metrics).
  template <typename T>
  static void WriteControlLine(const StepControl& local, std::span<const double> metrics,
                               std::span<T> line);
  template <typename T>
  void ReadControlLine(std::span<T> line, std::span<double> metrics);

  Communicator* comm_;
  MirroredOptions options_;
  Sequential* model_ = nullptr;
  Optimizer* optimizer_ = nullptr;
  // Offsets (in floats, into the store's control_and_grads()) of the lowest
  // gradient produced so far this step and of the lowest already launched.
  size_t ready_lo_ = 0, launched_lo_ = 0;
  std::unique_ptr<internal::SyncThread> sync_thread_;  // only with overlap and size > 1
  double exposed_sync_seconds_ = 0;
  int64_t buckets_launched_ = 0;
};

// The strategy for this process: MPI when started by an MPI launcher
// (mpirun, srun --mpi=pmix), one local process otherwise. Owns its
// communicator, and watches every collective of a multi-rank MPI job with
// `watchdog` (a dead, frozen or cut-off rank ends the job; see
// distribute/watchdog.h); `watchdog.seconds` 0: no watchdog.
class AutoStrategy {
 public:
  explicit AutoStrategy(MirroredOptions options = {}, WatchdogOptions watchdog = {});
  ~AutoStrategy();
  MirroredStrategy& strategy() { return *strategy_; }
  // What the strategy uses (the watchdog over MPI, when there is one):
  // collectives of checkpoints and programs go through it too.
  Communicator& communicator() { return comm_ ? *comm_ : *mpi_; }

 private:
  std::unique_ptr<Communicator> mpi_;
  std::unique_ptr<Communicator> comm_;
  std::unique_ptr<MirroredStrategy> strategy_;
};

}  // namespace holdfast
