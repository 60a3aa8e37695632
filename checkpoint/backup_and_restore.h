// BackupAndRestore: Keras' callback of that name for holdfast::Fit, with an
// exact resume. It saves the whole training state (model, optimizer, the
// position (epoch, next batch), the epoch's running metric sums) through a
// CheckpointManager, and at the start of training restores the newest valid
// checkpoint and moves Fit to the very next batch: never a redone epoch, and
// the run ends bit-identical to one that was never interrupted.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "checkpoint/manager.h"
#include "checkpoint/preemption.h"
#include "checkpoint/save_interval.h"
#include "core/fit.h"
#include "distribute/communicator.h"

namespace holdfast {

// Keras' BackupAndRestore vocabulary over CheckpointManager: where and how
// checkpoints are written is the manager's (CheckpointOptions); this adds
// only what the callback itself decides.
// BackupAndRestoreOptions::save_freq: measure, then save as often as the
// budget allows.
inline constexpr int64_t kSaveFreqAuto = -1;

// What save_freq = kSaveFreqAuto chose, for the run's summary.
struct AutoSaveReport {
  double budget = 0;
  double step_seconds = 0;       // median step without a save in flight
  double save_cost_seconds = 0;  // training time the last measured save cost
  int64_t interval = 0;          // the last interval the ranks agreed on
  int64_t saves_measured = 0;
  // The last measured save's cost over the interval then in force
  // (save_cost_seconds / (interval x step_seconds)): the share of run time
  // saves took lately; the next interval answers it.
  double estimated_overhead = 0;
};

struct BackupAndRestoreOptions {
  // The manager's options. `directory` is Keras' backup_dir; max_to_keep
  // is 2 by default, double checkpointing: restore falls back to the
  // previous checkpoint when the newest is damaged (Keras keeps 1); with
  // save_before_preemption, when any rank gets one of the signals every rank
  // commits a checkpoint at the same step and Fit returns with preempted()
  // set (the program then exits with kExitPreempted); async saves cost
  // training a copy of the state and write behind the next steps
  // (preemption and the end of training still commit synchronously).
  // `replica` is Fit's, set by the callback; checkpoint_interval must stay 0
  // (save_freq decides when to save).
  CheckpointOptions checkpoint;
  // 0: save at the end of every epoch (Keras' "epoch"); N > 0: every N
  // global steps; kSaveFreqAuto: as often as checkpoint.overhead_budget
  // allows (AutoSaveInterval, checkpoint/save_interval.h).
  int64_t save_freq = 0;
  // Delete the backup once training has finished (Keras' default). A run
  // that was stopped or interrupted keeps it.
  bool delete_checkpoint = true;
  // When checkpoints exist but none is usable, start from scratch (with a
  // warning) instead of failing.
  bool start_fresh_if_damaged = false;
  // A failed save ends training (std::runtime_error) instead of a warning
  // and a retry at the next save point.
  bool fail_on_save_error = false;
  // The program's own state, saved and restored with the training's: called
  // with the Checkpoint (model and optimizer already tracked) before the
  // first restore, to Track more objects (an EMA, a schedule, a struct).
  std::function<void(Checkpoint&)> track = nullptr;
  // How strict the restore is (RestoreOptions): allow_missing lets a run
  // that tracks a new object resume from a backup without it.
  RestoreOptions restore = {};
};

// A run stopped for preemption.
struct Preemption {
  int64_t step = 0;        // the step every rank stopped after
  bool committed = false;  // checkpoint `step` was committed (else the previous one stands)
  int signal = 0;          // the signal this rank got (0: another rank got it)
};

// Where a restored run resumed: the next batch it trains.
struct ResumePoint {
  int epoch = 0;
  int64_t batch = 0;
  int64_t step = 0;
};

class BackupAndRestore final : public Callback {
 public:
  // `comm` (null: this process alone) must be the communicator of the
  // strategy Fit uses (checked when training begins), and must outlive the
  // callback. Throws std::invalid_argument for options that cannot work.
  explicit BackupAndRestore(BackupAndRestoreOptions options, Communicator* comm = nullptr);
  ~BackupAndRestore() override;

  // Restores. Throws std::invalid_argument when the backup belongs to another
  // model, optimizer or run (global batch, seed, data size differ), and
  // std::runtime_error when checkpoints exist but none is usable (unless
  // start_fresh_if_damaged).
  void OnTrainBegin(TrainingState& s) override;
  void OnBatchBegin(TrainingState& s) override;
  void OnBatchEnd(TrainingState& s) override;
  void OnEpochEnd(TrainingState& s, const EpochLogs& logs) override;
  void OnTrainEnd(TrainingState& s) override;

  // Collective: commits a checkpoint of the current position now (async:
  // begins one; used by the save points above, public for custom schedules).
  Status SaveNow(TrainingState& s);

  std::optional<ResumePoint> resumed_from() const { return resumed_from_; }
  // Set when Fit returned because the job is being preempted.
  std::optional<Preemption> preempted() const { return preempted_; }
  // Saves committed and failed, and (async) the stall they caused.
  SaveStats save_stats() const { return manager_ ? manager_->stats() : SaveStats{}; }
  int64_t saves_committed() const { return save_stats().committed; }
  // With save_freq = kSaveFreqAuto: what it measured and chose.
  std::optional<AutoSaveReport> auto_save() const;
  int64_t saves_failed() const { return save_stats().failed; }

 private:
  void Bind(TrainingState& s);
  // Restores the backup, if any, into the model and `s` (OnTrainBegin).
  void Resume(TrainingState& s);
  // Records the training position in the Checkpoint's counters and values.
  void Stage(const TrainingState& s);
  // A failed save: thrown (fail_on_save_error) or a warning from the chief.
  void Report(const Status& status);
  const std::string& dir() const { return options_.checkpoint.directory; }

  BackupAndRestoreOptions options_;
  std::unique_ptr<Communicator> own_comm_;
  Communicator* comm_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<CheckpointManager> manager_;
  std::optional<ResumePoint> resumed_from_;
  // With save_before_preemption and no handler given: the process's handler,
  // from construction (Fit may start much later), lent to the manager.
  std::unique_ptr<PreemptionHandler> own_preemption_;
  std::optional<Preemption> preempted_;
  // save_freq = kSaveFreqAuto: the measurement, the next save's step, and
  // where the step being timed began.
  std::unique_ptr<AutoSaveInterval> auto_;
  int64_t next_save_step_ = 0;
  int64_t interval_ = 0;
  std::chrono::steady_clock::time_point step_began_;
  bool step_affected_ = false;
};

}  // namespace holdfast
