// custom_loop: a hand-written training loop with a Checkpoint and a
// CheckpointManager (the tf.train style), instead of Fit + BackupAndRestore.
//
//   checkpoint = Checkpoint(model, optimizer, ema=..., schedule=..., loop=...)
//   manager    = CheckpointManager(dir, max_to_keep=2, checkpoint_interval)
//   restore_or_initialize; for epoch: for step: train_step; manager.save()
//
// Everything the loop carries is tracked by the checkpoint: the model and
// its optimizer, an exponential moving average of the weights (a second
// model, "ema"), a learning-rate schedule whose state depends on the loss
// history ("schedule"), and the loop's position with the epoch's running
// loss ("loop"); the last two are structs of this program with a
// Boost.Serialization serialize(). So a rerun continues at the very next
// batch and ends with the same weights, EMA and learning rate as a run that
// was never stopped. Works alone and under mpirun (the mirrored strategy).
//
// Exit codes: 0 done, 2 usage or bad input, 1 other failure (and
// --stop-at-step, which simulates a crash), 75 preempted (SIGTERM or SIGUSR1)
// with a committed checkpoint.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "checkpoint/manager.h"
#include "checkpoint/preemption.h"
#include "core/dataset.h"
#include "core/exit_codes.h"
#include "core/fit.h"
#include "core/hash.h"
#include "distribute/mirrored_strategy.h"
#include "examples/cli.h"
#include "examples/layout_flags.h"

// The program's own state types. Named (not in an anonymous namespace):
// `holdfast ckpt inspect` shows their type names.
namespace custom_loop {

// Where the loop is, and the epoch's running loss: state of the program's
// own, saved through its serialize().
struct LoopPosition {
  int64_t epoch = 0;
  int64_t batch = 0;  // the next batch of that epoch
  double loss_sum = 0, samples = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& epoch& batch& loss_sum& samples;
  }
};

// A learning-rate schedule with state (Keras' ReduceLROnPlateau over windows
// of steps): after each window of kWindow steps, a window whose mean loss is
// not 1% below the best one so far counts as bad, and after kPatience bad
// windows in a row the rate halves. The state hangs on the loss history, so
// a resume is exact only if it is saved: the checkpoint tracks it.
struct PlateauSchedule {
  static constexpr int64_t kWindow = 10;
  static constexpr int64_t kPatience = 1;
  double rate = 1e-3;
  double best = std::numeric_limits<double>::infinity();
  double window_loss = 0, window_samples = 0;
  int64_t window_steps = 0, bad_windows = 0;

  void Record(const holdfast::StepMetrics& m) {
    window_loss += m.loss_sum;
    window_samples += m.samples;
    if (++window_steps < kWindow) return;
    const double mean = window_loss / window_samples;
    if (mean < best * 0.99) {
      best = mean;
      bad_windows = 0;
    } else if (++bad_windows >= kPatience) {
      rate *= 0.5;
      bad_windows = 0;
    }
    window_loss = window_samples = 0;
    window_steps = 0;
  }
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& rate& best& window_loss& window_samples& window_steps& bad_windows;
  }
};

}  // namespace custom_loop

namespace {

using custom_loop::LoopPosition;
using custom_loop::PlateauSchedule;
using holdfast::kExitFailure;
using holdfast::kExitUsage;

struct Flags {
  std::string data = holdfast::kFashionMnistDir;
  std::string checkpoint_dir;
  int epochs = 3;
  int64_t batch = 50;
  int64_t train_samples = 6000;
  uint64_t seed = 7;
  int64_t checkpoint_interval = 0;  // 0: one checkpoint per epoch
  int max_to_keep = 2;
  double keep_every_n_hours = 0;
  int64_t stop_at_step = -1;
  bool async_checkpoint = false;
  std::string summary_json;
  holdfast::examples::LayoutFlags layout;
};

// The EMA of the weights: ema = kEmaDecay * ema + (1 - kEmaDecay) * weights
// after every step, element by element (the same bits on every rank).
constexpr float kEmaDecay = 0.99f;

// The 784-128-10 MLP, built from `seed`.
void BuildMlp(holdfast::Sequential& model, uint64_t seed) {
  model.Add<holdfast::Dense>(128);
  model.Add<holdfast::ReLU>();
  model.Add<holdfast::Dense>(10);
  model.Build(seed);
}

using Clock = std::chrono::steady_clock;

// A progress line mid-epoch at most this often: enough to see a long epoch
// move, few enough not to flood a job log.
constexpr double kProgressSeconds = 10;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// "4.2s", "3m07s", "2h05m".
std::string Duration(double s) {
  char buf[32];
  const long long n = static_cast<long long>(s + 0.5);
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", s);
  } else if (n < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", n / 60, n % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", n / 3600, n / 60 % 60);
  }
  return buf;
}

// `preemption`: the program's one handler, which the manager saves on.
int Run(const Flags& f, holdfast::AutoStrategy& auto_strategy,
        holdfast::PreemptionHandler& preemption) {
  holdfast::Communicator& comm = auto_strategy.communicator();
  const bool chief = comm.rank() == 0;
  holdfast::examples::SetThreads(f.layout);

  auto loaded = holdfast::LoadFashionMnist(f.data);
  if (!loaded.ok()) holdfast::EndJob(comm, kExitUsage, "custom_loop", loaded.status().ToString());
  holdfast::Dataset& train = loaded->train;
  if (f.train_samples > 0 && f.train_samples < train.size()) {
    train.x.conservativeResize(f.train_samples, train.x.cols());
    train.y.conservativeResize(f.train_samples, train.y.cols());
  }

  holdfast::Sequential model(784);
  BuildMlp(model, f.seed);
  PlateauSchedule schedule;
  holdfast::Adam optimizer(static_cast<float>(schedule.rate));
  optimizer.Build(model.store().size());
  holdfast::Sequential ema(784);
  BuildMlp(ema, f.seed);  // starts at the initial weights
  LoopPosition loop;
  holdfast::SoftmaxCrossEntropy loss;

  holdfast::FitOptions options;  // what every replica must agree on
  options.batch_size = f.batch;
  options.seed = f.seed;
  options.replica = &auto_strategy.strategy();
  holdfast::Trainer trainer(model, optimizer, loss, train, options);
  const holdfast::BatchPlan plan(train.size(), f.batch, /*drop_remainder=*/false);

  holdfast::Checkpoint checkpoint(&model, &optimizer);
  checkpoint.Track("ema", &ema);
  // Replicated state: the chief's copy is saved; every rank's copy is
  // hashed at each save and must be the chief's.
  checkpoint.Track("schedule", &schedule, {.check_replicas = true});
  checkpoint.Track("loop", &loop);
  holdfast::CheckpointOptions manager_options;
  manager_options.directory = f.checkpoint_dir;
  manager_options.max_to_keep = f.max_to_keep;
  manager_options.keep_every_n_hours = f.keep_every_n_hours;
  manager_options.checkpoint_interval =
      f.checkpoint_interval > 0 ? f.checkpoint_interval : plan.num_batches();
  // SIGTERM or SIGUSR1 to any rank: every rank saves at one step, exit 75.
  manager_options.save_before_preemption = true;
  manager_options.preemption_handler = &preemption;
  // Asynchronous saves learn their progress from the step's control words,
  // and a preemption reaches every rank through them.
  manager_options.async = f.async_checkpoint;
  manager_options.replica = &trainer.replica();
  holdfast::CheckpointManager manager(&checkpoint, &comm, manager_options);

  // Restore every tracked object, or start with them as built above.
  auto restored = manager.RestoreOrInitialize();
  if (!restored.ok()) {
    holdfast::EndJob(comm, holdfast::RefusesTheRun(restored.status()) ? kExitUsage : kExitFailure,
                     "custom_loop", restored.status().ToString());
  }
  manager.PrepareAsyncSave();  // the snapshot's memory, before the first step
  optimizer.set_learning_rate(static_cast<float>(schedule.rate));
  int64_t steps_run = 0;
  int64_t& epoch = loop.epoch;
  int64_t& batch = loop.batch;
  double& loss_sum = loop.loss_sum;
  double& samples = loop.samples;
  if (batch == plan.num_batches()) {  // saved at the end of an epoch
    ++epoch;
    batch = 0;
    loss_sum = samples = 0;
  }
  if (chief && restored->has_value()) {
    std::printf("restored step %lld: epoch %lld, batch %lld\n", static_cast<long long>(**restored),
                static_cast<long long>(epoch + 1), static_cast<long long>(batch));
  }
  // Progress: rates over this invocation's steps only (a resumed run's
  // earlier steps took their time in another process).
  const int64_t total_steps = f.epochs * plan.num_batches();
  const auto start = Clock::now();
  auto last_line = start;
  double samples_run = 0;
  for (; epoch < f.epochs; ++epoch, batch = 0, loss_sum = 0, samples = 0) {
    const auto order =
        holdfast::EpochPermutation(f.seed, epoch, static_cast<uint32_t>(train.size()));
    const auto epoch_start = Clock::now();
    const double epoch_samples_before = samples;
    while (batch < plan.num_batches()) {
      if (optimizer.iterations() == f.stop_at_step) {
        if (chief)
          std::fprintf(stderr, "custom_loop: stopped at step %lld\n",
                       static_cast<long long>(f.stop_at_step));
        return kExitFailure;
      }
      const holdfast::StepMetrics m = trainer.Step(order, plan.Batch(batch));
      const std::span<const float> weights = std::as_const(model).store().params();
      const std::span<float> averaged = ema.store().params();
      for (size_t i = 0; i < averaged.size(); ++i) {
        averaged[i] = kEmaDecay * averaged[i] + (1.0f - kEmaDecay) * weights[i];
      }
      schedule.Record(m);
      optimizer.set_learning_rate(static_cast<float>(schedule.rate));
      loss_sum += m.loss_sum;
      samples += m.samples;
      ++batch;
      ++steps_run;
      samples_run += m.samples;
      if (chief && SecondsSince(last_line) >= kProgressSeconds && batch < plan.num_batches()) {
        last_line = Clock::now();
        const double elapsed = SecondsSince(start);
        const double eta = elapsed / static_cast<double>(steps_run) *
                           static_cast<double>(total_steps - optimizer.iterations());
        std::printf("epoch %lld/%d - batch %lld/%lld - %.0f samples/s - ETA %s - loss %.4f\n",
                    static_cast<long long>(epoch + 1), f.epochs, static_cast<long long>(batch),
                    static_cast<long long>(plan.num_batches()), samples_run / elapsed,
                    Duration(eta).c_str(), loss_sum / samples);
        std::fflush(stdout);
      }
      // Commits when checkpoint_interval steps have passed since the last one.
      const holdfast::Status saved = manager.Save();
      if (!saved.ok() && chief) {
        std::fprintf(stderr, "custom_loop: warning: %s\n", saved.ToString().c_str());
      }
      auto preempted = manager.SaveIfPreempted();
      if (!preempted.ok())
        holdfast::EndJob(comm, kExitFailure, "custom_loop",
                         "preempted: " + preempted.status().message());
      if (*preempted) {
        if (chief) {
          std::printf("preempted: checkpoint committed at step %lld\n",
                      static_cast<long long>(optimizer.iterations()));
        }
        return holdfast::kExitPreempted;
      }
    }
    if (chief) {
      const double seconds = SecondsSince(epoch_start);
      std::printf("epoch %lld/%d: loss %.4f (step %lld) - %.1fs - %.0f samples/s\n",
                  static_cast<long long>(epoch + 1), f.epochs, loss_sum / samples,
                  static_cast<long long>(optimizer.iterations()), seconds,
                  seconds > 0 ? (samples - epoch_samples_before) / seconds : 0.0);
      std::fflush(stdout);
      last_line = Clock::now();
    }
  }

  // The last asynchronous save resolves before the run reports.
  if (const holdfast::Status last = manager.WaitForSave(); !last.ok() && chief) {
    std::fprintf(stderr, "custom_loop: warning: %s\n", last.ToString().c_str());
  }
  const std::string weights = holdfast::HexU64(holdfast::Xxh3(model.store().params()));
  const std::string ema_weights = holdfast::HexU64(holdfast::Xxh3(ema.store().params()));
  if (chief) {
    const auto latest = manager.Latest();
    const double seconds = SecondsSince(start);
    std::printf(
        "done: %lld steps run by this invocation in %s (%.0f samples/s), weights xxh3-64 %s, "
        "latest %s\n",
        static_cast<long long>(steps_run), Duration(seconds).c_str(),
        seconds > 0 ? samples_run / seconds : 0.0, weights.c_str(),
        latest ? latest->path.c_str() : "(none)");
    if (!f.summary_json.empty()) {
      nlohmann::json j;
      j["weights_xxh64"] = weights;
      j["ema_xxh64"] = ema_weights;
      j["learning_rate"] = schedule.rate;
      j["steps"] = optimizer.iterations();
      j["steps_run"] = steps_run;
      j["resumed_from_step"] = restored->has_value() ? nlohmann::json(**restored) : nullptr;
      j["world_size"] = comm.size();
      j["threads"] = omp_get_max_threads();
      j["layout_invariant"] = trainer.replica().layout().invariant;
      nlohmann::json kept = nlohmann::json::array();
      for (const auto& c : manager.Checkpoints()) kept.push_back(c.name);
      j["checkpoints"] = kept;
      const holdfast::SaveStats& st = manager.stats();
      j["saves"] = {{"started", st.started},
                    {"committed", st.committed},
                    {"failed", st.failed},
                    {"waits", st.waits},
                    {"snapshot_seconds", st.snapshot_seconds},
                    {"wait_seconds", st.wait_seconds}};
      holdfast::examples::WriteJsonFile(f.summary_json, j);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(
      "custom_loop: a hand-written training loop (784-128-10 MLP on Fashion-MNIST) that saves "
      "with a CheckpointManager and continues from the newest checkpoint when rerun");
  Flags f;
  app.add_option("--checkpoint-dir", f.checkpoint_dir, "Directory of the checkpoints")->required();
  app.add_option("--data", f.data, "Directory of the Fashion-MNIST .gz files")
      ->capture_default_str();
  app.add_option("--epochs", f.epochs, "Epochs")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--batch", f.batch, "Global batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--train-samples", f.train_samples, "Use the first N training samples (0: all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--seed", f.seed, "Initialisation and data-order seed")->capture_default_str();
  app.add_option("--checkpoint-interval", f.checkpoint_interval,
                 "Save every N steps (0: at the end of every epoch)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--max-to-keep", f.max_to_keep, "Checkpoints kept, newest first")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--keep-every-n-hours", f.keep_every_n_hours,
                 "Also keep one checkpoint per N hours for good (0: off)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--stop-at-step", f.stop_at_step,
                 "Simulate a crash: exit 1 before training step N")
      ->capture_default_str();
  app.add_flag("--async-checkpoint", f.async_checkpoint,
               "Write checkpoints in the background: a save costs one copy of the state");
  app.add_option("--summary-json", f.summary_json, "Write a JSON summary here (chief)");
  holdfast::examples::AddLayoutFlags(app, &f.layout);
  if (const auto code = holdfast::examples::ParseCommandLine(app, "custom_loop", argc, argv))
    return *code;
  // The one handler, for the whole program (MPI start-up and shutdown
  // included), not only while the manager lives: see fmnist_mlp.
  holdfast::PreemptionHandler preemption;
  holdfast::MirroredOptions mirrored;
  mirrored.layout = holdfast::examples::ToLayoutOptions(f.layout);
  holdfast::AutoStrategy auto_strategy(mirrored);
  try {
    return Run(f, auto_strategy, preemption);
  } catch (const holdfast::RanksDisagreeError& e) {
    std::fprintf(stderr, "custom_loop: %s\n", e.what());
    return kExitUsage;
  } catch (const std::invalid_argument& e) {
    holdfast::EndJob(auto_strategy.communicator(), kExitUsage, "custom_loop", e.what());
  } catch (const std::exception& e) {
    holdfast::EndJob(auto_strategy.communicator(), kExitFailure, "custom_loop", e.what());
  }
}
