// fmnist_mlp: the Keras Fashion-MNIST MLP in C++ (784-256-32-10, ReLU,
// dropout 0.2, Adam 1e-3, batch 50), trained with holdfast::Fit.
//
// Exit codes: 0 done, 2 usage or bad input (flags, data files), 1 other
// failure, 75 preempted with a committed checkpoint (run it again).
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint/backup_and_restore.h"
#include "cluster/cluster_spec.h"
#include "core/callbacks.h"
#include "core/dataset.h"
#include "core/exit_codes.h"
#include "core/fit.h"
#include "core/hash.h"
#include "core/version.h"
#include "distribute/mirrored_strategy.h"
#include "distribute/mpi_communicator.h"
#include "examples/batch_logger.h"
#include "examples/cli.h"
#include "examples/layout_flags.h"

namespace {

using holdfast::Adam;
using holdfast::Dense;
using holdfast::Dropout;
using holdfast::Optimizer;
using holdfast::ReLU;
using holdfast::Sequential;
using holdfast::SGD;

using holdfast::kExitFailure;
using holdfast::kExitUsage;

struct Flags {
  std::string data = holdfast::kFashionMnistDir;
  std::vector<int> hidden = {256, 32};
  float dropout = 0.2f;
  std::string optimizer = "adam";
  float lr = -1;  // -1: the optimizer's default (Adam 1e-3, SGD 1e-2)
  float momentum = 0.0f;
  int64_t batch = 50;
  int epochs = 10;
  uint64_t seed = 42;
  holdfast::examples::LayoutFlags layout;
  double bucket_mib = 1;
  std::string overlap = "auto";
  double watchdog_seconds = 300;
  int64_t train_samples = 0;
  bool quiet = false;
  bool drop_remainder = false;
  std::string summary_json;
  std::string csv_log;
  std::string batch_log;
  // Fault tolerance.
  std::string backup_dir;
  std::string save_freq = "epoch";
  double overhead_budget = 0.035;
  bool double_checkpoint = false;
  bool keep_checkpoint = false;
  bool start_fresh_if_damaged = false;
  bool chief_writes_all = false;
  bool async_checkpoint = false;
  bool save_before_preemption = true;
  bool preempt_on_sigint = false;
  int interrupt_at_epoch = -1;
  int64_t interrupt_at_step = -1;
};

// Thrown on every rank at the same point by --interrupt-at-*: the program
// exits 1 as a crashed run would, with its backup left for the next run.
class Interrupted : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The seeds' InterruptingCallback: simulates a crash at a given epoch start
// or after a given number of steps.
class InterruptingCallback final : public holdfast::Callback {
 public:
  InterruptingCallback(int epoch, int64_t step) : epoch_(epoch), step_(step) {}
  void OnEpochBegin(holdfast::TrainingState& s) override {
    if (s.epoch == epoch_ && s.batch == 0) {
      throw Interrupted("interrupted at the start of epoch " + std::to_string(epoch_ + 1) +
                        " (--interrupt-at-epoch)");
    }
  }
  void OnBatchBegin(holdfast::TrainingState& s) override {
    if (s.step() == step_) {
      throw Interrupted("interrupted after step " + std::to_string(step_) +
                        " (--interrupt-at-step)");
    }
  }

 private:
  int epoch_;
  int64_t step_;
};

void ParseFlags(CLI::App& app, Flags& f) {
  app.description(
      "Trains an MLP on Fashion-MNIST (the Keras example in C++) and reports test accuracy.\n"
      "Exit codes: 0 done, 2 usage or bad input, 1 other failure, 75 preempted with a committed "
      "checkpoint (run it again to continue).");
  app.add_option("--data", f.data, "Directory with the Fashion-MNIST IDX .gz files")
      ->capture_default_str();
  app.add_option("--hidden", f.hidden, "Hidden layer widths, comma separated")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--dropout", f.dropout, "Dropout rate after each hidden layer, in [0,1)")
      ->check(CLI::Range(0.0f, 0.999f))
      ->capture_default_str();
  app.add_option("--optimizer", f.optimizer, "adam or sgd")
      ->check(CLI::IsMember({"adam", "sgd"}))
      ->capture_default_str();
  app.add_option("--lr", f.lr, "Learning rate (default: 0.001 for adam, 0.01 for sgd)")
      ->check(CLI::PositiveNumber);
  app.add_option("--momentum", f.momentum, "SGD momentum")
      ->check(CLI::Range(0.0f, 0.999f))
      ->capture_default_str();
  app.add_option("--batch", f.batch, "Global batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--epochs", f.epochs, "Epochs to train")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--seed", f.seed, "Seed of initialisation, data order and dropout")
      ->capture_default_str();
  holdfast::examples::AddLayoutFlags(app, &f.layout);
  app.add_option("--train-samples", f.train_samples,
                 "Use only the first N training samples (0: all 60000)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--bucket-mib", f.bucket_mib,
                 "Gradient all-reduce bucket size in MiB (multi-rank runs)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--overlap", f.overlap,
                 "Overlap gradient all-reduce with backward: on, off, or auto (on when the host "
                 "has a core to spare beyond its ranks' threads)")
      ->check(CLI::IsMember({"auto", "on", "off"}))
      ->capture_default_str();
  app.add_option("--watchdog-seconds", f.watchdog_seconds,
                 "Multi-rank runs: end the job when a collective waits this long (a dead, "
                 "frozen or cut-off rank) instead of hanging until the time limit; 0: never")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--drop-remainder", f.drop_remainder,
               "Drop each epoch's last partial batch (default: keep it)");
  app.add_flag("--quiet", f.quiet, "No progress output");
  app.add_option("--summary-json", f.summary_json, "Write a JSON summary of the run to FILE");
  app.add_option("--backup-dir", f.backup_dir,
                 "Back up training state to DIR and resume from it (BackupAndRestore)");
  app.add_option("--save-freq", f.save_freq,
                 "With --backup-dir: 'epoch' (at each epoch end), N (every N steps) or 'auto' "
                 "(as often as --overhead-budget allows, measured as training runs)")
      ->check([](const std::string& v) {
        if (v == "epoch" || v == "auto") return std::string();
        char* end = nullptr;
        const long long n = std::strtoll(v.c_str(), &end, 10);
        return (*end == '\0' && n > 0) ? std::string()
                                       : std::string("must be 'epoch', 'auto' or N > 0");
      })
      ->capture_default_str();
  app.add_option("--overhead-budget", f.overhead_budget,
                 "With --save-freq auto: the share of run time saves may cost")
      ->check(CLI::Range(0.0001, 0.9999))
      ->capture_default_str();
  app.add_flag("--double-checkpoint", f.double_checkpoint,
               "Keep the previous checkpoint too, to fall back to if the newest is damaged");
  app.add_flag("--keep-checkpoint", f.keep_checkpoint,
               "Keep the backup after training finishes (default: delete it)");
  app.add_flag("--start-fresh-if-damaged", f.start_fresh_if_damaged,
               "If every checkpoint in --backup-dir is damaged, start over instead of failing");
  app.add_flag("--chief-writes-all", f.chief_writes_all,
               "Rank 0 writes the whole checkpoint (clusters without a shared filesystem)");
  app.add_flag("--async-checkpoint", f.async_checkpoint,
               "Write checkpoints in the background: a save point costs one copy of the state");
  app.add_flag("--save-before-preemption,!--no-save-before-preemption", f.save_before_preemption,
               "With --backup-dir (default on): on SIGTERM or SIGUSR1 to any rank, every rank "
               "commits a checkpoint at the same step and the job exits 75");
  app.add_flag("--preempt-on-sigint", f.preempt_on_sigint,
               "Treat SIGINT (Ctrl-C) like SIGTERM: save, then exit 75");
  app.add_option("--interrupt-at-epoch", f.interrupt_at_epoch,
                 "Test aid: fail (exit 1) when epoch E (0-based) begins")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--interrupt-at-step", f.interrupt_at_step,
                 "Test aid: fail (exit 1) once S steps are done")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--csv-log", f.csv_log, "Append per-epoch loss and accuracy to a CSV FILE");
  app.add_option("--batch-log", f.batch_log,
                 "Write 'step,epoch,batch,loss' of every step to a CSV FILE (rank 0); a resumed "
                 "run keeps the rows up to its checkpoint and continues the file, a fresh run "
                 "starts it over");
  app.set_version_flag("--version", std::string("holdfast ") + HOLDFAST_VERSION);
}

std::unique_ptr<Optimizer> MakeOptimizer(const Flags& f) {
  if (f.optimizer == "sgd") return std::make_unique<SGD>(f.lr > 0 ? f.lr : 0.01f, f.momentum);
  return std::make_unique<Adam>(f.lr > 0 ? f.lr : 0.001f);
}

holdfast::PreemptionOptions PreemptionOptions(const Flags& f) {
  holdfast::PreemptionOptions options;
  if (f.preempt_on_sigint) options.signals.push_back(SIGINT);
  return options;
}

holdfast::MirroredOptions StrategyOptions(const Flags& f) {
  holdfast::MirroredOptions mirrored;
  mirrored.bucket_bytes = static_cast<size_t>(f.bucket_mib * (1 << 20));
  mirrored.overlap = f.overlap == "on"    ? holdfast::Overlap::kOn
                     : f.overlap == "off" ? holdfast::Overlap::kOff
                                          : holdfast::Overlap::kAuto;
  mirrored.layout = holdfast::examples::ToLayoutOptions(f.layout);
  return mirrored;
}

// Trains and reports. Bad input throws std::invalid_argument, other failures
// std::runtime_error; main decides how the job ends.
// `preemption`: the program's handler, null without save-before-preemption.
int Run(const Flags& f, holdfast::AutoStrategy& auto_strategy,
        holdfast::PreemptionHandler* preemption) {
  holdfast::MirroredStrategy& strategy = auto_strategy.strategy();
  const bool chief = strategy.rank() == 0;
  holdfast::examples::SetThreads(f.layout);

  std::unique_ptr<holdfast::BackupAndRestore> backup;
  if (!f.backup_dir.empty()) {
    holdfast::BackupAndRestoreOptions bo;
    bo.checkpoint.directory = f.backup_dir;
    bo.checkpoint.max_to_keep = f.double_checkpoint ? 2 : 1;
    bo.checkpoint.chief_writes_all = f.chief_writes_all;
    bo.checkpoint.async = f.async_checkpoint;
    bo.checkpoint.save_before_preemption = f.save_before_preemption;
    bo.checkpoint.preemption_handler = preemption;
    bo.save_freq = f.save_freq == "epoch"  ? 0
                   : f.save_freq == "auto" ? holdfast::kSaveFreqAuto
                                           : std::stoll(f.save_freq);
    bo.checkpoint.overhead_budget = f.overhead_budget;
    bo.delete_checkpoint = !f.keep_checkpoint;
    bo.start_fresh_if_damaged = f.start_fresh_if_damaged;
    backup = std::make_unique<holdfast::BackupAndRestore>(bo, &auto_strategy.communicator());
  }
  if (chief && !f.quiet) {
    std::printf("fmnist_mlp: %s\n", holdfast::ClusterSpec::FromEnvironment().Describe().c_str());
  }
  auto data = holdfast::LoadFashionMnist(f.data);
  if (!data.ok()) throw std::invalid_argument("cannot load data: " + data.status().message());
  holdfast::Dataset train =
      f.train_samples > 0 ? data->train.Head(f.train_samples) : std::move(data->train);

  Sequential model(static_cast<int>(train.x.cols()));
  for (int width : f.hidden) {
    model.Add<Dense>(width).Add<ReLU>();
    if (f.dropout > 0) model.Add<Dropout>(f.dropout);
  }
  model.Add<Dense>(10);
  model.Build(f.seed);
  std::unique_ptr<Optimizer> optimizer = MakeOptimizer(f);
  optimizer->Build(model.store().size());
  holdfast::SoftmaxCrossEntropy loss;

  InterruptingCallback interrupting(f.interrupt_at_epoch, f.interrupt_at_step);
  holdfast::ProgressBar progress(f.quiet);
  std::unique_ptr<holdfast::CsvLogger> csv;
  std::unique_ptr<holdfast::examples::BatchLogger> batch_log;
  holdfast::FitOptions options;
  options.epochs = f.epochs;
  options.batch_size = f.batch;
  options.seed = f.seed;
  options.drop_remainder = f.drop_remainder;
  options.replica = &strategy;
  // Before the restore: it reads the resumed step later, at the first epoch
  // begin, and must log a step before a save of that step commits.
  if (!f.batch_log.empty()) {
    batch_log = std::make_unique<holdfast::examples::BatchLogger>(f.batch_log);
    options.callbacks.push_back(batch_log.get());
  }
  // Restore first, so that the others see the resumed position.
  if (backup) options.callbacks.push_back(backup.get());
  options.callbacks.push_back(&interrupting);
  options.callbacks.push_back(&progress);
  if (!f.csv_log.empty()) {
    csv = std::make_unique<holdfast::CsvLogger>(f.csv_log);
    options.callbacks.push_back(csv.get());
  }

  const auto start = std::chrono::steady_clock::now();
  const holdfast::History history = holdfast::Fit(model, *optimizer, loss, train, options);
  const double train_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (backup && backup->preempted()) {
    // Every rank stopped after the same step; no evaluation, no summary:
    // the grace time is for the checkpoint.
    if (backup->preempted()->committed) return holdfast::kExitPreempted;
    if (chief) {
      std::fprintf(stderr,
                   "fmnist_mlp: preempted, and the checkpoint at step %lld failed; the previous "
                   "one stands\n",
                   static_cast<long long>(backup->preempted()->step));
    }
    return kExitFailure;
  }
  const holdfast::EvalResult test = holdfast::Evaluate(model, loss, data->test, 1000, &strategy);
  if (!chief) return 0;

  int64_t samples = 0;
  for (const auto& e : history.epochs) samples += e.samples;
  const double samples_per_second = train_seconds > 0 ? samples / train_seconds : 0;
  const std::string weights = holdfast::HexU64(holdfast::Xxh3(model.store().params()));
  const double final_loss = history.epochs.empty() ? 0 : history.epochs.back().loss;

  std::printf("fmnist_mlp: %d epochs, %lld steps, world size %d\n",
              static_cast<int>(history.epochs.size()),
              static_cast<long long>(optimizer->iterations()), strategy.world_size());
  std::printf("  final train loss   %.4f\n  test accuracy      %.4f\n", final_loss, test.accuracy);
  std::printf("  samples/s          %.0f\n  weights xxh3-64    %s\n", samples_per_second,
              weights.c_str());

  if (!f.summary_json.empty()) {
    nlohmann::json j;
    // Over all runs that trained this model, not just this one.
    j["epochs_completed"] = history.epochs.empty() ? 0
                                                   : history.epochs.back().epoch +
                                                         (history.epochs.back().complete ? 1 : 0);
    j["steps"] = optimizer->iterations();
    j["final_train_loss"] = final_loss;
    j["final_train_accuracy"] = history.epochs.empty() ? 0.0 : history.epochs.back().accuracy;
    j["test_loss"] = test.loss;
    j["test_accuracy"] = test.accuracy;
    j["weights_xxh64"] = weights;
    j["world_size"] = strategy.world_size();
    j["communicator"] = auto_strategy.communicator().kind();
    j["bucket_bytes"] = StrategyOptions(f).bucket_bytes;
    j["overlap"] = strategy.overlapping();
    j["exposed_sync_seconds"] = strategy.exposed_sync_seconds();
    j["samples_per_second"] = samples_per_second;
    j["train_seconds"] = train_seconds;
    j["train_samples"] = train.size();
    j["threads"] = omp_get_max_threads();
    j["layout_invariant"] = strategy.layout().invariant;
    j["hidden"] = f.hidden;
    j["batch"] = f.batch;
    j["optimizer"] = optimizer->Signature();
    j["seed"] = f.seed;
    j["forward_flops_per_sample"] = model.ForwardFlopsPerSample();
    j["resumed_from"] = nullptr;
    if (backup && backup->resumed_from()) {
      const holdfast::ResumePoint r = *backup->resumed_from();
      j["resumed_from"] = {{"epoch", r.epoch}, {"batch", r.batch}, {"step", r.step}};
    }
    j["epochs_run"] = static_cast<int>(history.epochs.size());
    j["checkpoints_committed"] = backup ? backup->saves_committed() : 0;
    j["checkpoints_failed"] = backup ? backup->saves_failed() : 0;
    if (backup) {
      const holdfast::SaveStats st = backup->save_stats();
      j["checkpoint_waits"] = st.waits;
      j["checkpoint_stall_seconds"] = st.snapshot_seconds + st.wait_seconds;
      if (const auto a = backup->auto_save()) {
        j["save_freq_auto"] = {{"overhead_budget", a->budget},
                               {"step_seconds", a->step_seconds},
                               {"save_cost_seconds", a->save_cost_seconds},
                               {"interval_steps", a->interval},
                               {"saves_measured", a->saves_measured},
                               {"estimated_overhead", a->estimated_overhead}};
      }
    }
    j["holdfast_version"] = HOLDFAST_VERSION;
    nlohmann::json epochs = nlohmann::json::array();
    for (const auto& e : history.epochs) {
      epochs.push_back({{"epoch", e.epoch},
                        {"loss", e.loss},
                        {"accuracy", e.accuracy},
                        {"samples", e.samples},
                        {"seconds", e.seconds}});
    }
    j["history"] = epochs;
    holdfast::examples::WriteJsonFile(f.summary_json, j);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("fmnist_mlp");
  Flags flags;
  ParseFlags(app, flags);
  if (const auto code = holdfast::examples::ParseCommandLine(app, "fmnist_mlp", argc, argv))
    return *code;
  // The one preemption handler: signals are caught for the program's whole
  // life, MPI start-up and shutdown included (one arriving once training is
  // over must not kill a job whose work is done: its backup is already
  // deleted). BackupAndRestore's manager saves on it.
  std::optional<holdfast::PreemptionHandler> preemption;
  if (!flags.backup_dir.empty() && flags.save_before_preemption) {
    preemption.emplace(PreemptionOptions(flags));
  }
  // Before anything that can fail on one rank only: the error paths below
  // need the communicator to end the job on every rank.
  holdfast::AutoStrategy auto_strategy(
      StrategyOptions(flags), holdfast::WatchdogOptions{.seconds = flags.watchdog_seconds});
  holdfast::Communicator& comm = auto_strategy.communicator();
  try {
    return Run(flags, auto_strategy, preemption ? &*preemption : nullptr);
  } catch (const Interrupted& e) {
    // Raised on every rank at the same step: exit like a crashed run.
    if (comm.rank() == 0) std::fprintf(stderr, "fmnist_mlp: %s\n", e.what());
    return kExitFailure;
  } catch (const holdfast::RanksDisagreeError& e) {
    // Raised on every rank together: each reports it and exits normally.
    std::fprintf(stderr, "fmnist_mlp: rank %d: %s\n", comm.rank(), e.what());
    return kExitUsage;
  } catch (const std::invalid_argument& e) {
    holdfast::EndJob(comm, kExitUsage, "fmnist_mlp", e.what());
  } catch (const std::exception& e) {
    holdfast::EndJob(comm, kExitFailure, "fmnist_mlp", e.what());
  }
}
