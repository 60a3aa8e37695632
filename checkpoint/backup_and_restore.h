// BackupAndRestore: Keras' callback of that name for holdfast::Fit, with an
// exact resume. It saves the whole training state (model, optimizer, the
// position (epoch, next batch), the epoch's running metric sums) through a
// CheckpointManager, and at the start of training restores the newest valid
// checkpoint and moves Fit to the very next batch: never a redone epoch, and
// the run ends bit-identical to one that was never interrupted.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "checkpoint/manager.h"
#include "checkpoint/preemption.h"
#include "core/fit.h"
#include "distribute/communicator.h"

namespace holdfast {

struct BackupAndRestoreOptions {
  std::string backup_dir;
  // 0: save at the end of every epoch (Keras' "epoch"); N > 0: every N
  // global steps.
  int64_t save_freq = 0;
  // Keep the previous checkpoint too and fall back to it when the newest is
  // damaged.
  bool double_checkpoint = false;
  // Delete the backup once training has finished (Keras' default). A run
  // that was stopped or interrupted keeps it.
  bool delete_checkpoint = true;
  // When checkpoints exist but none is usable, start from scratch (with a
  // warning) instead of failing.
  bool start_fresh_if_damaged = false;
  // A failed save ends training (std::runtime_error) instead of a warning
  // and a retry at the next save point.
  bool fail_on_save_error = false;
  // For clusters without a shared filesystem (see CheckpointOptions).
  bool chief_writes_all = false;
  // Install a PreemptionHandler: when any rank gets one of its signals, every
  // rank commits a checkpoint at the same step and Fit returns with
  // preempted() set (the program then exits with kExitPreempted).
  bool save_before_preemption = false;
  PreemptionOptions preemption = {};
  Env* env = nullptr;  // null: Env::Default()
  // Asynchronous saves (see CheckpointOptions::async): a save point costs
  // training a copy of the state; the write and commit happen behind the
  // next steps. A failed save is reported (or thrown) at the step where
  // every rank learns of it. Preemption and the end of training still
  // commit synchronously.
  bool async = false;
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
  // strategy Fit uses, and must outlive the callback.
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
  int64_t saves_failed() const { return save_stats().failed; }

 private:
  void Bind(TrainingState& s);
  // Records the training position in the Checkpoint's counters and values.
  void Stage(const TrainingState& s);
  // A failed save: thrown (fail_on_save_error) or a warning from the chief.
  void Report(const Status& status);

  BackupAndRestoreOptions options_;
  std::unique_ptr<Communicator> own_comm_;
  Communicator* comm_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<CheckpointManager> manager_;
  std::optional<ResumePoint> resumed_from_;
  std::unique_ptr<PreemptionHandler> preemption_;
  std::optional<Preemption> preempted_;
};

}  // namespace holdfast
