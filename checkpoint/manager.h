// CheckpointManager: commits a Checkpoint from every rank with a
// chief-coordinated two-phase commit, keeps the newest ones by policy, and
// restores the newest valid one, falling back past damaged ones.
//
// The layout of `directory` (LATEST, ckpt-<step>/MANIFEST.json and shards,
// prepare areas) is checkpoint/names.h's.
//
// Save: every writer writes and fsyncs its shard in the prepare area and
// reports {ok, bytes, hash, error} to the chief; the chief writes and fsyncs
// the manifest, renames the area into place, fsyncs the directory, replaces
// LATEST, applies the keep policy, and tells every rank the outcome. A process
// killed at any instant leaves the old or the new checkpoint committed,
// never a torn one.
//
// Collective: every rank calls Save / RestoreLatest at the same point (see
// distribute/communicator.h for the ordering contract). Not thread-safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/directory_lock.h"
#include "checkpoint/env.h"
#include "checkpoint/preemption.h"
#include "core/exit_codes.h"
#include "core/fit.h"
#include "core/status.h"
#include "distribute/communicator.h"

namespace holdfast {
namespace internal {
struct ShardToWrite;
}

struct CheckpointOptions {
  std::string directory;
  // Committed checkpoints kept, newest first (>= 1). 2 keeps the previous one
  // to fall back to when the newest is damaged (double checkpointing).
  int max_to_keep = 2;
  // Also keep one checkpoint per this many hours of training, forever
  // (tf.train.CheckpointManager's keep_checkpoint_every_n_hours); 0: off.
  double keep_every_n_hours = 0;
  // For clusters without a shared filesystem: the chief writes every byte
  // (one shard) and restores alone, then broadcasts. Otherwise each rank
  // writes 1/W of every blob.
  bool chief_writes_all = false;
  // Save() commits only when at least this many steps passed since the last
  // committed or restored checkpoint, or since a fresh start found none
  // (tf.train.CheckpointManager's checkpoint_interval); 0: every call commits.
  int64_t checkpoint_interval = 0;
  // Save when any rank is signalled: the loop calls SaveIfPreempted after
  // each step (needs `replica`). One handler per process catches the
  // signals: `preemption_handler` when the program holds one for its whole
  // life (so that a signal during start-up or shutdown is caught too; it
  // must outlive the manager), else one the manager installs for its own
  // life with `preemption`.
  bool save_before_preemption = false;
  PreemptionOptions preemption = {};
  PreemptionHandler* preemption_handler = nullptr;
  Env* env = nullptr;  // null: Env::Default()
  // Asynchronous saves (as PyTorch DCP's async_save, Orbax, CheckFreq). Save()
  // copies this rank's part of the state into a reusable buffer and returns;
  // a background thread writes, fsyncs and hashes the shard. Every rank
  // learns from `replica`'s control words, which ride in the gradient
  // all-reduce of every step, when all shards are written; the chief then
  // commits (manifest, rename, fsync) in the background too, and the same
  // words tell every rank the outcome at the same step. No extra collective
  // and no MPI call off the training thread. At most one save is in flight:
  // a save that falls due before the previous one resolved waits for it.
  // The loop must call Poll() (or Save()) after every step, and
  // WaitForSave() before it ends.
  bool async = false;
  // With BackupAndRestore's save_freq = kSaveFreqAuto: the share of run
  // time saves may cost (CheckFreq's default, 3.5%).
  double overhead_budget = 0.035;
  // The training's replica, given once, here: required with async and with
  // save_before_preemption; must outlive the manager and belong to the same
  // ranks as the manager's Communicator. Its layout (core/fit.h) is recorded
  // in every checkpoint and checked on restore (checkpoint/run_layout.h);
  // without one, neither.
  Replica* replica = nullptr;
};

struct SaveStats {
  int64_t started = 0;  // saves begun (async) or attempted (sync)
  int64_t committed = 0;
  int64_t failed = 0;
  // Async: saves that fell due while the previous one was still in flight
  // and waited for it, and the training time spent on that and on copying
  // the state (the whole stall an asynchronous save causes).
  int64_t waits = 0;
  double wait_seconds = 0;
  double snapshot_seconds = 0;
};

// How strict a restore is (tf.train.Checkpoint's restore().expect_partial()
// and assert_existing_objects_matched). By default every tracked object must
// be in the checkpoint, of its kind and size, and every saved object
// tracked; otherwise FailedPrecondition with one line naming every
// difference, and nothing is modified.
struct RestoreOptions {
  // A tracked object the checkpoint lacks (newly added to a run that
  // resumes) keeps the value the program gave it: it starts fresh, is
  // named on stderr, and listed by fresh_objects().
  bool allow_missing = false;
  // Saved objects this run does not track are left unread.
  bool expect_partial = false;
  // Tracked arrays are read in place: a checkpoint found damaged after its
  // bytes reached them leaves them to the older checkpoint restored instead,
  // or, when none is usable, holding what was read. This keeps a copy of
  // them first (the state's size in memory and a copy's time) and puts it
  // back whenever the restore fails or leaves such bytes behind. User
  // objects, scalars and counters never change before all is verified.
  bool undo_on_failure = false;
  // Each rank's part of an array reaches the other ranks while the rest is
  // read, in all-gathers of this many bytes per rank: smaller pieces hide
  // more of the all-gather behind the reads, larger ones need fewer
  // collectives. Must be > 0.
  size_t gather_piece_bytes = size_t{16} << 20;
};

// RestoreLatest reports what it restored to the file kRestoreReportEnv
// (core/exit_codes.h) names, if set.

struct CheckpointInfo {
  std::string name;  // "ckpt-1200"
  std::string path;  // <directory>/ckpt-1200
  int64_t step = 0;
  double created_unix = 0;
  uint64_t bytes = 0;
  int world_size = 0;
};

// Whether an error of a manager's first collective call (RestoreLatest,
// Save) means this run cannot start as asked, so that a program exits
// kExitUsage: the directory is unusable (InvalidArgument) or held by another
// job (Unavailable), or its checkpoints are another run's (FailedPrecondition).
inline bool RefusesTheRun(const Status& status) {
  return status.code() == StatusCode::kInvalidArgument ||
         status.code() == StatusCode::kUnavailable ||
         status.code() == StatusCode::kFailedPrecondition;
}

// OK when `replica` and `comm` are the same rank of the same world, else
// InvalidArgument naming both: a manager and the training it saves must
// belong together (CheckpointOptions::replica).
Status CheckReplicaMatches(const Replica& replica, const Communicator& comm);

class CheckpointManager {
 public:
  // `checkpoint` and `comm` must outlive the manager.
  CheckpointManager(Checkpoint* checkpoint, Communicator* comm, CheckpointOptions options);
  ~CheckpointManager();

  // Collective. Commits "ckpt-<step>" — unless `checkpoint_interval` steps
  // have not passed since the last commit and `force` is false: then it does
  // nothing. On any rank's failure (disk full, I/O error, permission)
  // nothing is committed, the previous checkpoints stay, and every rank gets
  // the same Aborted status naming the failed ranks.
  // Async: polls (see Poll), then starts a save of this step unless the
  // interval (counted from the last save begun) says no; the status is the
  // outcome of an earlier save that resolved now, if one did.
  Status Save(bool force = false);

  // Async: advances the save in flight with the control words of the step
  // just finished (not collective; the same on every rank). Returns the
  // save's outcome at the step where it resolves, OK otherwise. With no
  // save in flight, has the writer thread prepare the next snapshot's
  // memory; call it at every step (Save does).
  Status Poll();
  // Async: allocates and faults in the snapshot's memory now and waits for
  // it (not collective), instead of on the writer thread during the first
  // steps, where it takes the cores training uses (120 MB slowed the big
  // model's first four steps by 5-9% each). For the start of training, after
  // a restore; Poll keeps it sized afterwards. Sync: nothing.
  void PrepareAsyncSave();
  // Collective. Async: finishes the save in flight, if any, right now (every
  // rank waits for its writer; the chief commits) and returns its outcome.
  Status WaitForSave();
  // Collective. Commits this step synchronously, after the save in flight
  // (if that one was of this step, it is enough). For the end of training
  // and preemption.
  Status SaveAndWait();
  bool save_in_flight() const;
  // The step of the newest checkpoint committed or restored; -1: none yet.
  int64_t last_committed_step() const { return last_committed_step_; }
  const SaveStats& stats() const { return stats_; }

  // Collective (waits for an async save in flight first). Loads the newest
  // valid checkpoint into the Checkpoint on
  // every rank and returns its step; nullopt when the directory holds none
  // (a fresh start). Damaged ones are skipped with a note on stderr (chief).
  // Errors, the same on every rank: DataLoss when checkpoints exist but none
  // is valid; FailedPrecondition when the newest valid one was written for
  // another model or optimizer (the message names the difference).
  StatusOr<std::optional<int64_t>> RestoreLatest(const RestoreOptions& options = {});
  // The tracked objects the last restore found no saved value for
  // (RestoreOptions::allow_missing), by path.
  const std::vector<std::string>& fresh_objects() const { return fresh_objects_; }

  // Collective. RestoreLatest, and on a fresh start runs `initialize` (if
  // given) instead — tf.train.CheckpointManager.restore_or_initialize.
  StatusOr<std::optional<int64_t>> RestoreOrInitialize(const std::function<void()>& initialize = {},
                                                       const RestoreOptions& options = {});

  // Committed checkpoints (those with a manifest), oldest first. Chief-side
  // view; cheap (reads manifests only, no shard hashing).
  std::vector<CheckpointInfo> Checkpoints() const;
  // The newest committed checkpoint, if any (no shard hashing: RestoreLatest
  // may still fall back past it if it is damaged).
  std::optional<CheckpointInfo> Latest() const;

  // Deletes every committed checkpoint, LATEST and prepare areas (Keras'
  // delete_checkpoint after a finished fit). Collective.
  Status DeleteAll();

  // With save_before_preemption: call after every step (collective). When
  // a preemption signal reached this process it raises the replica's stop
  // request, which reaches every rank with the next step's all-reduce; at
  // the step where the replicas agree to stop it commits a checkpoint
  // (whatever checkpoint_interval says) and returns true: the loop should
  // end and the program exit with kExitPreempted. A failed save is returned
  // as the error (the previous checkpoint stands). Async: an in-flight save
  // is finished first.
  StatusOr<bool> SaveIfPreempted();
  // Optional, before a step: raises the stop request of a signal that came
  // meanwhile, so that it rides in this step's all-reduce (one step sooner
  // than from SaveIfPreempted). Not collective.
  void RequestStopIfPreempted();
  // The first preemption signal this process got, 0 if none.
  int preemption_signal() const;

  const CheckpointOptions& options() const { return options_; }

 private:
  struct Ticket;
  struct AsyncSave;

  Ticket MakeTicket(int64_t step, std::string area) const;
  // How many ranks write a shard: all, or only the chief.
  int Writers() const { return options_.chief_writes_all ? 1 : comm_->size(); }
  // The run's layout: the replica's; unknown without one (then nothing is
  // recorded or checked).
  const LayoutOptions* Layout() const {
    return options_.replica ? &options_.replica->layout() : nullptr;
  }
  // The blobs this rank writes a part of: split ones, replicated ones on the
  // chief, and its own per-rank ones (named PerRankBlobName).
  std::vector<NamedBlob> WrittenBlobs() const;
  using Slices = std::vector<std::span<const std::byte>>;
  // This rank's slice of every live blob (empty past the writers), in
  // ticket order.
  Slices LiveSlices(int writers) const;
  // This rank's shard of `ticket`, holding `slices`.
  internal::ShardToWrite ShardOf(const Ticket& ticket, const Slices& slices) const;
  // Writes `shard` (ShardOf `ticket`) into the prepare area, leaving it open
  // and not yet synced in `*file`; returns the vote for the chief. `direct`:
  // past the page cache (Env::NewDirectWritableFile), for the background
  // writer, whose CPU time is taken from training; a synchronous save, which
  // training waits for, takes the faster buffered write and one fsync.
  std::string WriteOwnShard(const Ticket& ticket, const internal::ShardToWrite& shard,
                            std::unique_ptr<WritableFile>* file, bool direct);
  Status SaveSync();
  Status StartAsyncSave();
  // Async, between saves: has the writer thread allocate and fault in the
  // snapshot's memory for the state's current sizes, so that no save's copy
  // is the first to touch it (on the big model at np=2, that first copy
  // stalled training 37-56 ms, the later ones 6-10 ms).
  void ReserveSnapshot();
  Status FinishAsyncSave(Status outcome);
  // The chief's side of the decision. CommitOnChief = WriteManifest, fsync
  // it and the prepare area, Publish; SaveSync interleaves the same steps
  // with the other ranks' fsyncs. Each returns the Aborted error that every
  // rank reports when the save fails.
  Status CommitOnChief(const Ticket& ticket, const std::vector<std::string>& votes);
  // Checks the votes and writes the manifest into the prepare area, left
  // open and not yet synced. An error's message says why (no cleanup done).
  StatusOr<std::unique_ptr<WritableFile>> WriteManifest(const Ticket& ticket,
                                                        const std::vector<std::string>& votes);
  // The commit point and after: renames the durable prepare area into
  // place, fsyncs the directory, updates LATEST, applies the keep policy.
  Status Publish(const Ticket& ticket);
  // Removes the prepare area; returns the error naming `why`.
  Status AbortCommit(const Ticket& ticket, const std::string& why);
  Status ApplyKeepPolicy();
  // Collective, once: the chief makes the directory ready and holds its lock
  // (checkpoint/directory_lock.h) for the manager's life; every rank gets
  // the same error. Called first by every collective that touches the
  // directory; later calls return OK at once.
  Status OpenDirectory();

  Checkpoint* checkpoint_;
  Communicator* comm_;
  CheckpointOptions options_;
  Env* env_;
  std::unique_ptr<PreemptionHandler> own_preemption_;  // when none was given
  PreemptionHandler* preemption_ = nullptr;            // set with save_before_preemption
  int64_t last_committed_step_ = -1;                   // by this manager, or restored; -1: none yet
  // Where checkpoint_interval counts from: the last commit, restore or fresh
  // start, or the last asynchronous save begun.
  int64_t interval_start_step_ = -1;
  SaveStats stats_;
  std::vector<std::string> fresh_objects_;
  bool directory_open_ = false;
  std::shared_ptr<DirectoryLock> directory_lock_;  // the chief's; after async_ goes
  // Last member: destroyed first, so its writer thread finishes its queued
  // jobs (which use the members above) before anything else goes.
  std::unique_ptr<AsyncSave> async_;
};

}  // namespace holdfast
