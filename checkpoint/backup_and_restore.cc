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
  if (options_.backup_dir.empty())
    throw std::invalid_argument("BackupAndRestore needs a backup_dir");
  if (options_.save_freq < 0)
    throw std::invalid_argument("save_freq must be 0 (epoch) or positive");
  if (comm_ == nullptr) {
    own_comm_ = std::make_unique<LocalCommunicator>();
    comm_ = own_comm_.get();
  }
  if (options_.save_before_preemption) {
    preemption_ = std::make_unique<PreemptionHandler>(options_.preemption);
  }
}

BackupAndRestore::~BackupAndRestore() = default;

void BackupAndRestore::Bind(TrainingState& s) {
  if (checkpoint_ && &checkpoint_->model() == s.model) return;
  checkpoint_ = std::make_unique<Checkpoint>(s.model, s.optimizer);
  CheckpointOptions co;
  co.directory = options_.backup_dir;
  co.max_to_keep = options_.double_checkpoint ? 2 : 1;
  co.chief_writes_all = options_.chief_writes_all;
  co.env = options_.env;
  co.async = options_.async;
  co.replica = s.replica;
  manager_ = std::make_unique<CheckpointManager>(checkpoint_.get(), comm_, co);
}

void BackupAndRestore::OnTrainBegin(TrainingState& s) {
  Bind(s);
  auto restored = manager_->RestoreLatest();
  if (!restored.ok()) {
    const Status& st = restored.status();
    if (st.code() == StatusCode::kFailedPrecondition) {
      throw std::invalid_argument("backup " + options_.backup_dir +
                                  " belongs to another run: " + st.message());
    }
    if (st.code() == StatusCode::kDataLoss && options_.start_fresh_if_damaged) {
      if (comm_->rank() == 0) {
        std::fprintf(stderr, "holdfast: warning: %s; starting from scratch as asked\n",
                     st.message().c_str());
      }
      return;
    }
    throw std::runtime_error("cannot restore from " + options_.backup_dir + ": " + st.message());
  }
  const std::map<std::string, int64_t>& c = checkpoint_->counters;
  auto expect = [&](const char* key, int64_t now, const char* what) {
    const auto it = c.find(key);
    if (it == c.end()) {
      throw std::invalid_argument("backup " + options_.backup_dir +
                                  " was not written by BackupAndRestore");
    }
    if (it->second != now) {
      throw std::invalid_argument("backup " + options_.backup_dir + " was written with " + what +
                                  " " + std::to_string(it->second) + ", this run has " +
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
                options_.backup_dir.c_str());
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

void BackupAndRestore::OnBatchBegin(TrainingState& s) {
  // The request rides in this step's control words: every rank sees it in
  // OnBatchEnd of the same step.
  if (preemption_ && preemption_->requested()) s.replica->RequestStop();
}

void BackupAndRestore::OnBatchEnd(TrainingState& s) {
  if (options_.async) {
    Bind(s);
    Report(manager_->Poll());
  }
  if (options_.save_freq > 0 && s.step() % options_.save_freq == 0) (void)SaveNow(s);
  if (preemption_ && s.replica->control().stop_requests > 0) {
    Bind(s);
    Stage(s);
    // Synchronous, after any save in flight: the agreed step is committed
    // on every rank before anyone exits.
    const Status status = manager_->SaveAndWait();
    Report(status);
    const bool committed = status.ok() && manager_->last_committed_step() == s.step();
    preempted_ = Preemption{s.step(), committed, preemption_->signal_number()};
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
