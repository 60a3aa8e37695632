#include "checkpoint/backup_and_restore.h"

#include <cstdio>
#include <stdexcept>

namespace holdfast {
namespace {

// Counter and value keys of the training position and run identity.
constexpr const char* kEpoch = "holdfast/epoch";
constexpr const char* kBatch = "holdfast/batch";
constexpr const char* kGlobalBatch = "holdfast/global_batch";
constexpr const char* kSeed = "holdfast/seed";
constexpr const char* kSamples = "holdfast/num_samples";
constexpr const char* kDropRemainder = "holdfast/drop_remainder";
constexpr const char* kLossSum = "holdfast/metrics/loss_sum";
constexpr const char* kCorrect = "holdfast/metrics/correct";
constexpr const char* kSeen = "holdfast/metrics/samples";

}  // namespace

BackupAndRestore::BackupAndRestore(BackupAndRestoreOptions options, Communicator* comm)
    : options_(std::move(options)), comm_(comm) {
  if (options_.checkpoint.directory.empty())
    throw std::invalid_argument("BackupAndRestore needs a backup directory (checkpoint.directory)");
  if (options_.save_freq < 0 && options_.save_freq != kSaveFreqAuto)
    throw std::invalid_argument("save_freq must be 0 (epoch), positive or kSaveFreqAuto");
  if (options_.save_freq == kSaveFreqAuto &&
      !(options_.checkpoint.overhead_budget > 0 && options_.checkpoint.overhead_budget < 1)) {
    throw std::invalid_argument("overhead_budget must be a share of run time in (0, 1)");
  }
  if (options_.checkpoint.checkpoint_interval != 0)
    throw std::invalid_argument("BackupAndRestore saves by save_freq: leave checkpoint_interval 0");
  if (comm_ == nullptr) {
    own_comm_ = std::make_unique<LocalCommunicator>();
    comm_ = own_comm_.get();
  }
  // Signals are caught from here on, not only once Fit begins and the
  // manager exists; the manager borrows this handler.
  if (options_.checkpoint.save_before_preemption &&
      options_.checkpoint.preemption_handler == nullptr) {
    own_preemption_ = std::make_unique<PreemptionHandler>(options_.checkpoint.preemption);
    options_.checkpoint.preemption_handler = own_preemption_.get();
  }
}

BackupAndRestore::~BackupAndRestore() = default;

void BackupAndRestore::Bind(TrainingState& s) {
  if (checkpoint_ && &checkpoint_->model() == s.model) return;
  if (options_.checkpoint.replica != nullptr && options_.checkpoint.replica != s.replica) {
    throw std::invalid_argument("BackupAndRestore's checkpoint.replica is not the one Fit uses");
  }
  if (const Status matches = CheckReplicaMatches(*s.replica, *comm_); !matches.ok()) {
    throw std::invalid_argument("BackupAndRestore's communicator is not Fit's strategy's: " +
                                matches.message());
  }
  checkpoint_ = std::make_unique<Checkpoint>(s.model, s.optimizer);
  if (options_.track) options_.track(*checkpoint_);
  CheckpointOptions co = options_.checkpoint;
  co.replica = s.replica;
  manager_ = std::make_unique<CheckpointManager>(checkpoint_.get(), comm_, co);
}

void BackupAndRestore::OnTrainBegin(TrainingState& s) {
  Bind(s);
  if (options_.save_freq == kSaveFreqAuto) {
    auto_ = std::make_unique<AutoSaveInterval>(options_.checkpoint.overhead_budget);
    step_affected_ = false;
    next_save_step_ = 0;  // set at the first step: a Fit measures before it saves
    interval_ = 0;
  }
  Resume(s);
  manager_->PrepareAsyncSave();  // before the first step, not during the first ones
}

void BackupAndRestore::Resume(TrainingState& s) {
  RestoreOptions restore = options_.restore;
  // Starting fresh after damage needs the weights from before the restore.
  restore.undo_on_failure |= options_.start_fresh_if_damaged;
  auto restored = manager_->RestoreLatest(restore);
  if (!restored.ok()) {
    const Status& st = restored.status();
    if (st.code() == StatusCode::kFailedPrecondition) {
      throw std::invalid_argument("backup " + dir() + " belongs to another run: " + st.message());
    }
    if (RefusesTheRun(st)) throw std::invalid_argument(st.message());  // names the directory
    if (st.code() == StatusCode::kDataLoss && options_.start_fresh_if_damaged) {
      if (comm_->rank() == 0) {
        std::fprintf(stderr, "holdfast: warning: %s; starting from scratch as asked\n",
                     st.message().c_str());
      }
      return;
    }
    throw std::runtime_error("cannot restore from " + dir() + ": " + st.message());
  }
  const std::map<std::string, int64_t>& c = checkpoint_->counters;
  auto expect = [&](const char* key, int64_t now, const char* what) {
    const auto it = c.find(key);
    if (it == c.end()) {
      throw std::invalid_argument("backup " + dir() + " was not written by BackupAndRestore");
    }
    if (it->second != now) {
      throw std::invalid_argument("backup " + dir() + " was written with " + what + " " +
                                  std::to_string(it->second) + ", this run has " +
                                  std::to_string(now));
    }
  };
  if (!restored->has_value()) {
    // A fresh start: record this run's identity with the first save.
    return;
  }
  const FitOptions& o = *s.options;
  expect(kGlobalBatch, o.batch_size, "global batch size");
  expect(kSeed, static_cast<int64_t>(o.seed), "seed");
  expect(kSamples, s.samples_per_epoch, "samples per epoch");
  expect(kDropRemainder, o.drop_remainder, "drop_remainder");
  s.epoch = static_cast<int>(c.at(kEpoch));
  s.batch = c.at(kBatch);
  s.metrics.loss_sum = checkpoint_->values.at(kLossSum);
  s.metrics.correct = checkpoint_->values.at(kCorrect);
  s.metrics.samples = checkpoint_->values.at(kSeen);
  resumed_from_ = ResumePoint{s.epoch, s.batch, s.step()};
  if (comm_->rank() == 0) {
    std::printf("holdfast: resuming from step %lld (epoch %d, batch %lld) of %s\n",
                static_cast<long long>(s.step()), s.epoch + 1, static_cast<long long>(s.batch),
                dir().c_str());
    std::fflush(stdout);
  }
}

void BackupAndRestore::Stage(const TrainingState& s) {
  auto& c = checkpoint_->counters;
  c[kEpoch] = s.epoch;
  c[kBatch] = s.batch;
  c[kGlobalBatch] = s.options->batch_size;
  c[kSeed] = static_cast<int64_t>(s.options->seed);
  c[kSamples] = s.samples_per_epoch;
  c[kDropRemainder] = s.options->drop_remainder;
  checkpoint_->values[kLossSum] = s.metrics.loss_sum;
  checkpoint_->values[kCorrect] = s.metrics.correct;
  checkpoint_->values[kSeen] = s.metrics.samples;
}

void BackupAndRestore::Report(const Status& status) {
  if (status.ok()) return;
  if (options_.fail_on_save_error) throw std::runtime_error(status.message());
  if (comm_->rank() == 0) {
    std::fprintf(stderr, "holdfast: warning: %s; training goes on, the next save will retry\n",
                 status.message().c_str());
  }
}

Status BackupAndRestore::SaveNow(TrainingState& s) {
  Bind(s);
  Stage(s);
  const Status status = manager_->Save(/*force=*/true);
  Report(status);
  return status;
}

std::optional<AutoSaveReport> BackupAndRestore::auto_save() const {
  if (!auto_) return std::nullopt;
  AutoSaveReport r;
  r.budget = auto_->budget();
  r.step_seconds = auto_->step_seconds();
  r.save_cost_seconds = auto_->last_save_cost();
  r.interval = interval_;
  r.saves_measured = auto_->saves_measured();
  if (interval_ > 0 && r.step_seconds > 0) {
    r.estimated_overhead = r.save_cost_seconds / (static_cast<double>(interval_) * r.step_seconds);
  }
  return r;
}

void BackupAndRestore::OnBatchBegin(TrainingState& s) {
  if (auto_ && next_save_step_ == 0) {
    // The first step of this run (fresh or resumed): measure before saving.
    next_save_step_ = s.step() + 1 + auto_->Proposal();
    step_began_ = std::chrono::steady_clock::now();
  }
  // A signal's stop request then rides in this step's control words: every
  // rank learns of it in OnBatchEnd of the same step.
  if (options_.checkpoint.save_before_preemption) {
    Bind(s);
    manager_->RequestStopIfPreempted();
  }
}

void BackupAndRestore::OnBatchEnd(TrainingState& s) {
  const auto now = std::chrono::steady_clock::now();
  if (auto_) {
    // This step's time, with any save it waited for, before this end's own
    // work; the next step's time will include what this end does.
    auto_->AddStep(std::chrono::duration<double>(now - step_began_).count(), step_affected_);
    step_began_ = now;
  }
  if (options_.checkpoint.async) {
    Bind(s);
    Report(manager_->Poll());
  }
  bool saved = false;
  if (options_.save_freq > 0 && s.step() % options_.save_freq == 0) {
    (void)SaveNow(s);
    saved = true;
  }
  if (auto_ && s.step() >= next_save_step_) {
    auto_->SaveStarted();
    (void)SaveNow(s);
    saved = true;
    // Every rank saves at the same steps: the longest interval any
    // rank's measurement asks for.
    std::vector<int64_t> proposal = {auto_->Proposal()};
    comm_->AllReduceMax(proposal);
    interval_ = proposal[0];
    next_save_step_ = s.step() + interval_;
  }
  if (auto_) {
    const SaveStats st = manager_->stats();
    step_affected_ = saved || st.started > st.committed + st.failed;
  }
  if (options_.checkpoint.save_before_preemption && s.replica->control().stop_requests > 0) {
    Bind(s);
    Stage(s);
    // Synchronous, after any save in flight: the agreed step is committed
    // on every rank before anyone exits.
    const StatusOr<bool> saved = manager_->SaveIfPreempted();
    Report(saved.status());
    const bool committed = saved.ok() && manager_->last_committed_step() == s.step();
    preempted_ = Preemption{s.step(), committed, manager_->preemption_signal()};
    s.stop_training = true;
    if (comm_->rank() == 0) {
      std::printf(
          "holdfast: preempted: %s at step %lld; exiting for a restart\n",
          committed ? "checkpoint committed" : "CHECKPOINT FAILED (the previous one stands)",
          static_cast<long long>(s.step()));
      std::fflush(stdout);
    }
  }
}

void BackupAndRestore::OnEpochEnd(TrainingState& s, const EpochLogs&) {
  if (options_.save_freq == 0) (void)SaveNow(s);
}

void BackupAndRestore::OnTrainEnd(TrainingState& s) {
  // The last asynchronous save resolves before Fit returns.
  if (manager_) Report(manager_->WaitForSave());
  const bool finished = !s.stop_training && s.epoch >= s.options->epochs;
  if (!finished || !options_.delete_checkpoint) return;
  Bind(s);
  const Status st = manager_->DeleteAll();
  if (!st.ok() && comm_->rank() == 0) {
    std::fprintf(stderr, "holdfast: warning: could not delete the backup: %s\n",
                 st.message().c_str());
  }
}

}  // namespace holdfast
