#include "distribute/mirrored_strategy.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>

#include "core/check.h"
#include "core/hash.h"
#include "distribute/internal/sync_thread.h"
#include "distribute/mpi_communicator.h"
#include "distribute/watchdog.h"

namespace holdfast {
namespace {

constexpr size_t kControl = ParameterStore::kControlFloats;
// Layout of the control line that leads the gradient buffer.
constexpr size_t kStopWord = 0, kFailureWord = 1, kBusyWord = 2, kFailedWord = 3, kFirstMetric = 4;
// Metrics travel as floats: their sums over ranks carry float precision
// (~1e-7 relative), plenty for reported loss and accuracy. In
// layout-invariant mode they travel as doubles on their grid, exactly.
constexpr size_t kMaxMetrics = kControl - kFirstMetric;
static_assert(kControl * sizeof(double) == Replica::kStepLineBytes);

int64_t HashToInt(const std::string& s) { return static_cast<int64_t>(Xxh3(s)); }

int64_t DataHash(const Dataset& data) {
  const uint64_t x = Xxh3(data.x.data(), sizeof(float) * static_cast<size_t>(data.x.size()));
  const uint64_t y = Xxh3(data.y.data(), sizeof(float) * static_cast<size_t>(data.y.size()));
  return static_cast<int64_t>(x ^ (y * 0x9E3779B97F4A7C15ull));
}

// One field that every rank must agree on.
struct Field {
  const char* what;
  int64_t value;
  bool numeric;  // print values; otherwise a hash of `text`
  std::string text = {};
};

}  // namespace

MirroredStrategy::MirroredStrategy(Communicator* comm, MirroredOptions options)
    : Replica(options.layout), comm_(comm), options_(options) {
  HOLDFAST_CHECK(comm != nullptr, "MirroredStrategy needs a communicator");
  if (options_.bucket_bytes < sizeof(float)) options_.bucket_bytes = sizeof(float);
}

MirroredStrategy::~MirroredStrategy() = default;

void MirroredStrategy::BeginTraining(Sequential& model, Optimizer& optimizer, const Loss& loss,
                                     const Dataset& data, const FitOptions& options) {
  model_ = &model;
  optimizer_ = &optimizer;
  const std::vector<Field> fields = {
      {"model (layers and shapes)", HashToInt(model.Signature()), false, model.Signature()},
      {"optimizer", HashToInt(optimizer.Signature()), false, optimizer.Signature()},
      {"loss", HashToInt(loss.name()), false, loss.name()},
      {"global batch size", options.batch_size, true},
      {"seed", static_cast<int64_t>(options.seed), true},
      {"number of training samples", data.size(), true},
      {"training data (content hash)", DataHash(data), false, "xxh3 of inputs and targets"},
      {"epochs", options.epochs, true},
      {"initial epoch", options.initial_epoch, true},
      {"initial batch", options.initial_batch, true},
      {"shuffle", options.shuffle, true},
      {"drop_remainder", options.drop_remainder, true},
      {"layout-invariant mode (--layout-invariant, 1 = on)", layout().invariant, true},
  };
  // One collective finds every disagreement.
  std::vector<int64_t> values;
  for (const Field& f : fields) values.push_back(f.value);
  const Communicator::MinMax range = comm_->AllReduceMinMax(values);
  for (size_t i = 0; i < fields.size(); ++i) {
    const int64_t max = range.max[i], min = range.min[i];
    if (min == max) continue;
    std::string message = "ranks disagree on the " + std::string(fields[i].what);
    if (fields[i].numeric) {
      message += " (values from " + std::to_string(min) + " to " + std::to_string(max) + "; rank " +
                 std::to_string(rank()) + " has " + std::to_string(fields[i].value) + ")";
    } else {
      message += " (rank " + std::to_string(rank()) + " has " + fields[i].text + ")";
    }
    throw RanksDisagreeError(message);
  }

  // Start from the chief's state, whatever each rank initialised.
  std::span<float> params = model.store().params();
  comm_->Broadcast(params.data(), params.size_bytes(), 0);
  for (OptimizerSlot& slot : optimizer.slots()) {
    comm_->Broadcast(slot.values.data(), slot.values.size_bytes(), 0);
  }
  int64_t iterations = optimizer.iterations();
  comm_->Broadcast(&iterations, sizeof iterations, 0);
  optimizer.set_iterations(iterations);
  bool overlap = options_.overlap == Overlap::kOn;
  if (options_.overlap == Overlap::kAuto) {
    const long cores = sysconf(_SC_NPROCESSORS_ONLN);
    overlap = cores > static_cast<long>(MpiCommunicator::LocalRankCount()) * omp_get_max_threads();
  }
  if (overlap && world_size() > 1 && !layout().invariant && !sync_thread_) {
    sync_thread_ = std::make_unique<internal::SyncThread>(comm_);
  }
}

template <typename T>
void MirroredStrategy::WriteControlLine(const StepControl& local, std::span<const double> metrics,
                                        std::span<T> line) {
  std::fill(line.begin(), line.end(), T{0});
  line[kStopWord] = static_cast<T>(local.stop_requests);
  line[kFailureWord] = static_cast<T>(local.failures);
  line[kBusyWord] = static_cast<T>(local.checkpoint_busy);
  line[kFailedWord] = static_cast<T>(local.checkpoint_failed);
  for (size_t i = 0; i < metrics.size(); ++i) line[kFirstMetric + i] = static_cast<T>(metrics[i]);
}

GradientsReadyFn MirroredStrategy::BeginStepSync(std::span<const double> metrics) {
  HOLDFAST_CHECK(model_ != nullptr, "BeginStepSync before BeginTraining");
  comm_->NoteStep(optimizer_->iterations() + 1);
  HOLDFAST_CHECK(metrics.size() <= kMaxMetrics, "at most " << kMaxMetrics << " step metrics");
  HOLDFAST_CHECK(!layout().invariant, "layout-invariant steps sync through ShareRows");
  const StepControl local = TakeLocalControl();
  WriteControlLine(local, metrics, model_->store().control_and_grads().first(kControl));
  ready_lo_ = launched_lo_ = model_->store().control_and_grads().size();
  if (!sync_thread_) return {};
  return [this](size_t begin, size_t end) { OnGradientsReady(begin, end); };
}

void MirroredStrategy::OnGradientsReady(size_t begin, size_t /*end*/) {
  // Ranges arrive from the end of the buffer towards the start; alignment
  // padding between layers is zero and simply travels along.
  ready_lo_ = std::min(ready_lo_, begin + kControl);
  LaunchReadyBuckets(/*final=*/false);
}

void MirroredStrategy::LaunchReadyBuckets(bool final) {
  // Full buckets from the top of what is ready; at the end of the step the
  // rest: one collective if it fits in fuse_bytes, else buckets where a
  // remainder under half a bucket joins the last one (a collective's latency
  // is paid per call, however small).
  const size_t bucket = std::max<size_t>(1, options_.bucket_bytes / sizeof(float));
  if (final) {
    const size_t grads = launched_lo_ - std::max(ready_lo_, kControl);
    if (grads * sizeof(float) <= options_.fuse_bytes) {
      if (launched_lo_ > ready_lo_) Launch(ready_lo_, launched_lo_);
      return;
    }
  }
  while (launched_lo_ - ready_lo_ >= bucket || (final && launched_lo_ > ready_lo_)) {
    const bool last = final && launched_lo_ - ready_lo_ < bucket + bucket / 2;
    Launch(last ? ready_lo_ : launched_lo_ - bucket, launched_lo_);
  }
}

void MirroredStrategy::Launch(size_t lo, size_t hi) {
  float* base = model_->store().control_and_grads().data();
  if (sync_thread_) {
    sync_thread_->Enqueue(base + lo, hi - lo);
  } else {
    comm_->AllReduceSum(std::span<float>(base + lo, hi - lo));
  }
  launched_lo_ = lo;
  ++buckets_launched_;
}

void MirroredStrategy::FinishStepSync(std::span<float> /*grads*/, std::span<double> metrics) {
  const auto start = std::chrono::steady_clock::now();
  if (world_size() > 1) {
    // Everything is final now, down to the control line at offset 0.
    ready_lo_ = 0;
    LaunchReadyBuckets(/*final=*/true);
    if (sync_thread_) sync_thread_->Drain();
  }
  ReadControlLine(model_->store().control_and_grads().first(kControl), metrics);
  ++control_.sequence;
  exposed_sync_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

template <typename T>
void MirroredStrategy::ReadControlLine(std::span<T> line, std::span<double> metrics) {
  control_.stop_requests = static_cast<int>(std::lround(line[kStopWord]));
  control_.failures = static_cast<int>(std::lround(line[kFailureWord]));
  control_.checkpoint_busy = static_cast<int>(std::lround(line[kBusyWord]));
  control_.checkpoint_failed = static_cast<int>(std::lround(line[kFailedWord]));
  for (size_t i = 0; i < metrics.size(); ++i) metrics[i] = line[kFirstMetric + i];
}

void MirroredStrategy::ShareRows(std::span<std::byte> rows, std::span<const size_t> offsets,
                                 std::span<double> metrics) {
  HOLDFAST_CHECK(model_ != nullptr, "ShareRows before BeginTraining");
  HOLDFAST_CHECK(
      offsets.size() == static_cast<size_t>(world_size()) + 1 && offsets.back() <= rows.size(),
      "ShareRows: " << offsets.size() << " offsets for " << world_size() << " ranks");
  HOLDFAST_CHECK(metrics.size() <= kMaxMetrics, "at most " << kMaxMetrics << " step metrics");
  comm_->NoteStep(optimizer_->iterations() + 1);
  const auto start = std::chrono::steady_clock::now();
  // Doubles: the metrics are on their grid and the words small integers, so
  // the lines add up exactly, in any order.
  auto line = [&](int r) {
    HOLDFAST_CHECK(offsets[r + 1] - offsets[r] >= kStepLineBytes, "no step line for rank " << r);
    return rows.data() + offsets[r];
  };
  std::array<double, kControl> own{}, sum{};
  WriteControlLine(TakeLocalControl(), metrics, std::span<double>(own));
  std::memcpy(line(rank()), own.data(), kStepLineBytes);
  if (world_size() > 1) comm_->AllGather(rows.data(), Communicator::Consecutive(offsets));
  for (int r = 0; r < world_size(); ++r) {
    std::memcpy(own.data(), line(r), kStepLineBytes);
    for (size_t i = 0; i < kControl; ++i) sum[i] += own[i];
  }
  ReadControlLine(std::span<double>(sum), metrics);
  ++control_.sequence;
  exposed_sync_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void MirroredStrategy::ShareGradients(std::span<float> grads, std::span<const size_t> cuts) {
  if (world_size() == 1) return;
  const auto start = std::chrono::steady_clock::now();
  std::vector<size_t> bytes(cuts.begin(), cuts.end());
  for (size_t& b : bytes) b *= sizeof(float);
  comm_->AllGather(grads.data(), Communicator::Consecutive(bytes));
  ++buckets_launched_;
  exposed_sync_seconds_ +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void MirroredStrategy::SumMetrics(std::span<double> values) { comm_->AllReduceSum(values); }

AutoStrategy::AutoStrategy(MirroredOptions options, WatchdogOptions watchdog) {
  if (MpiCommunicator::LaunchedByMpi()) {
    mpi_ = std::make_unique<MpiCommunicator>();
    if (watchdog.seconds > 0 && mpi_->size() > 1) {
      comm_ = std::make_unique<WatchdogCommunicator>(mpi_.get(), std::move(watchdog));
    }
  } else {
    comm_ = std::make_unique<LocalCommunicator>();
  }
  strategy_ = std::make_unique<MirroredStrategy>(&communicator(), options);
}

AutoStrategy::~AutoStrategy() = default;

}  // namespace holdfast
