#include "checkpoint/manager.h"

#include <chrono>
#include <cstddef>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "checkpoint/internal/manager_internal.h"
#include "checkpoint/internal/manifest.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/reader.h"
#include "checkpoint/run_layout.h"
#include "core/check.h"
#include "core/data_order.h"
#include "core/hash.h"

namespace holdfast {
namespace internal {

std::string UtcNow(double unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Status SyncAndClose(WritableFile& file) {
  const Status synced = file.Sync();
  const Status closed = file.Close();
  return synced.ok() ? closed : synced;
}

Status SyncTogether(const std::vector<std::function<Status()>>& calls) {
  std::vector<Status> results(calls.size());
  std::vector<std::thread> threads;
  for (size_t i = 1; i < calls.size(); ++i) {
    threads.emplace_back([&calls, &results, i] { results[i] = calls[i](); });
  }
  if (!calls.empty()) results[0] = calls[0]();
  for (std::thread& t : threads) t.join();
  for (const Status& s : results) {
    if (!s.ok()) return s;
  }
  return Status::Ok();
}

std::string FailedVote(const Status& why) {
  return nlohmann::json({{"ok", false}, {"error", why.ToString()}}).dump();
}

Status RemoveCheckpoint(Env* env, const std::string& path) {
  const std::string manifest = JoinPath(path, kManifestFile);
  if (env->Exists(manifest)) HOLDFAST_RETURN_IF_ERROR(env->RemoveFile(manifest));
  return RemoveTree(env, path);
}

std::string RandomNonce() {
  std::random_device random;
  char nonce[17];
  std::snprintf(nonce, sizeof nonce, "%08x%08x", random(), random());
  return nonce;
}

std::string VoteFile(const std::string& area, int rank) {
  return JoinPath(area, ".vote-" + std::to_string(rank));
}

std::string TrackedHash(const std::vector<TrackedObject>& objects) {
  std::string text;
  for (const TrackedObject& o : objects)
    text.append(o.info.path).append("\n").append(Describe(o.info)).append("\n");
  return HexU64(Xxh3(text));
}

}  // namespace internal

using internal::FailedVote;
using internal::kNoSharedDirectory;
using internal::RandomNonce;
using internal::RemoveCheckpoint;
using internal::ShardToWrite;
using internal::SyncAndClose;
using internal::SyncTogether;
using internal::UnixNow;
using internal::UtcNow;
using internal::VoteFile;
using nlohmann::json;

Status CheckReplicaMatches(const Replica& replica, const Communicator& comm) {
  if (replica.world_size() == comm.size() && replica.rank() == comm.rank()) return Status::Ok();
  return InvalidArgumentError("the Replica (rank " + std::to_string(replica.rank()) + " of " +
                              std::to_string(replica.world_size()) +
                              ") and the Communicator (rank " + std::to_string(comm.rank()) +
                              " of " + std::to_string(comm.size()) + ") belong to other ranks");
}

CheckpointManager::CheckpointManager(Checkpoint* checkpoint, Communicator* comm,
                                     CheckpointOptions options)
    : checkpoint_(checkpoint),
      comm_(comm),
      options_(std::move(options)),
      env_(options_.env != nullptr ? options_.env : Env::Default()) {
  HOLDFAST_CHECK(checkpoint_ != nullptr && comm_ != nullptr, "CheckpointManager needs both");
  if (options_.max_to_keep < 1) options_.max_to_keep = 1;
  if (options_.save_before_preemption) {
    HOLDFAST_CHECK(
        options_.replica != nullptr,
        "save_before_preemption needs the training's Replica (CheckpointOptions::replica)");
    preemption_ = options_.preemption_handler;
    if (preemption_ == nullptr) {
      own_preemption_ = std::make_unique<PreemptionHandler>(options_.preemption);
      preemption_ = own_preemption_.get();
    }
  }
  if (options_.replica != nullptr) {
    const Status matches = CheckReplicaMatches(*options_.replica, *comm_);
    HOLDFAST_CHECK(matches.ok(), matches.message());
  }
  if (options_.async) {
    HOLDFAST_CHECK(options_.replica != nullptr, "async checkpoints need the training's Replica");
    async_ = std::make_unique<AsyncSave>();
  }
}

CheckpointManager::~CheckpointManager() = default;

bool CheckpointManager::save_in_flight() const { return async_ && async_->ticket; }

void CheckpointManager::RequestStopIfPreempted() {
  if (preemption_ && preemption_->requested()) options_.replica->RequestStop();
}

int CheckpointManager::preemption_signal() const {
  return preemption_ ? preemption_->signal_number() : 0;
}

StatusOr<bool> CheckpointManager::SaveIfPreempted() {
  if (!preemption_) return false;
  RequestStopIfPreempted();
  if (options_.replica->control().stop_requests == 0) return false;
  HOLDFAST_RETURN_IF_ERROR(SaveAndWait());
  return true;
}

std::vector<NamedBlob> CheckpointManager::WrittenBlobs() const {
  const int rank = comm_->rank();
  std::vector<NamedBlob> written;
  for (NamedBlob& blob : checkpoint_->Blobs()) {
    if (blob.placement == Placement::kChief && rank != 0) continue;
    if (blob.placement == Placement::kPerRank) blob.name = PerRankBlobName(blob.name, rank);
    written.push_back(std::move(blob));
  }
  return written;
}

CheckpointManager::Ticket CheckpointManager::MakeTicket(int64_t step, std::string area) const {
  Ticket t;
  t.step = step;
  t.name = CheckpointName(step);
  t.area = std::move(area);
  t.world = comm_->size();
  t.writers = Writers();
  t.counters = checkpoint_->counters;
  if (Layout() != nullptr) RecordRunLayout(*Layout(), omp_get_max_threads(), &t.counters);
  t.values = checkpoint_->values;
  t.model_signature = checkpoint_->ModelSignature();
  t.optimizer_signature = checkpoint_->OptimizerSignature();
  for (const NamedBlob& blob : WrittenBlobs()) {
    t.blobs.push_back({blob.name, blob.bytes.size() / sizeof(float), blob.placement});
  }
  t.tracked = internal::TrackedHash(checkpoint_->objects());
  for (const TrackedObject& o : checkpoint_->objects()) {
    ObjectInfo info = o.info;
    if (info.per_rank) {
      info.world = t.world;
      info.blobs.clear();
      for (int r = 0; r < t.world; ++r) info.blobs.push_back(PerRankBlobName(info.path, r));
    }
    t.objects.push_back(std::move(info));
    if (o.check_replicas) {
      t.replica_hashes[o.info.path] =
          HexU64(Xxh3(o.words.data(), o.words.size() * sizeof(uint32_t)));
    }
  }
  return t;
}

CheckpointManager::Slices CheckpointManager::LiveSlices(int writers) const {
  Slices slices;
  for (const NamedBlob& blob : WrittenBlobs()) {
    if (blob.placement != Placement::kSplit) {
      slices.push_back(blob.bytes);
      continue;
    }
    const int64_t words = static_cast<int64_t>(blob.bytes.size() / sizeof(float));
    const Range r = ReplicaSlice(words, comm_->rank(), writers);
    slices.push_back(blob.bytes.subspan(r.begin * sizeof(float), r.size() * sizeof(float)));
  }
  return slices;
}

ShardToWrite CheckpointManager::ShardOf(const Ticket& ticket, const Slices& slices) const {
  const int rank = comm_->rank();
  ShardToWrite shard;
  shard.rank = static_cast<uint32_t>(rank);
  shard.world = static_cast<uint32_t>(ticket.world);
  shard.step = static_cast<uint64_t>(ticket.step);
  for (size_t i = 0; i < ticket.blobs.size(); ++i) {
    const Ticket::Blob& blob = ticket.blobs[i];
    const uint64_t offset =
        blob.placement == Placement::kSplit
            ? static_cast<uint64_t>(
                  ReplicaSlice(static_cast<int64_t>(blob.floats), rank, ticket.writers).begin)
            : 0;
    shard.slices.push_back({blob.name, blob.floats, offset, slices[i], {}});
  }
  if (rank == 0) {
    shard.counters = &ticket.counters;
    shard.values = &ticket.values;
  }
  return shard;
}

std::string CheckpointManager::WriteOwnShard(const Ticket& ticket, const ShardToWrite& shard,
                                             std::unique_ptr<WritableFile>* file, bool direct) {
  const int rank = comm_->rank();
  const std::string name = ShardFileName(rank, ticket.writers);
  const std::string path = JoinPath(ticket.area, name);
  StatusOr<std::unique_ptr<WritableFile>> created =
      direct ? env_->NewDirectWritableFile(path) : env_->NewWritableFile(path);
  if (!created.ok()) {
    if (created.status().code() == StatusCode::kNotFound && rank != 0 &&
        !env_->Exists(ticket.area)) {
      return FailedVote(FailedPreconditionError("cannot see the prepare area " + ticket.area +
                                                " the chief made: " + kNoSharedDirectory));
    }
    return FailedVote(created.status());
  }
  *file = std::move(*created);
  const StatusOr<internal::WrittenShard> written = internal::WriteShard(shard, **file);
  if (!written.ok()) return FailedVote(written.status());
  // Where each slice lies in the file, so that readers can split the
  // shard; the small ones (the chief's and per-rank blobs) with a digest of
  // their own, so that a restore can check them before it writes any
  // live state (docs/parallel-restore.md).
  json layout = json::array();
  for (size_t i = 0; i < shard.slices.size(); ++i) {
    const ShardToWrite::Slice& slice = shard.slices[i];
    json entry = {slice.name, slice.offset, slice.data.size() / sizeof(float),
                  written->slice_offsets.at(i)};
    if (ticket.blobs.at(i).placement != Placement::kSplit) {
      entry.push_back(HexU64(Xxh3(slice.data.data(), slice.data.size())));
    }
    layout.push_back(std::move(entry));
  }
  json vote = {{"ok", true},
               {"file", name},
               {"bytes", written->bytes},
               {"xxh3", HexU64(written->checksum)},
               {"slices", std::move(layout)},
               {"tracked", ticket.tracked},
               {"replicas", ticket.replica_hashes}};
  // Only this rank knows the sizes of its per-rank blobs.
  json per_rank = json::array();
  for (const Ticket::Blob& blob : ticket.blobs) {
    if (blob.placement == Placement::kPerRank) per_rank.push_back({blob.name, blob.floats});
  }
  vote["per_rank_blobs"] = per_rank;
  return vote.dump();
}

Status CheckpointManager::OpenDirectory() {
  if (directory_open_) return Status::Ok();
  if (options_.chief_writes_all) {
    // The same on every rank: no collective needed to agree on it. Only
    // writers vote, so neither per-rank state nor replica hashes could
    // reach the chief.
    for (const TrackedObject& o : checkpoint_->objects()) {
      if (o.info.per_rank) {
        return InvalidArgumentError("cannot save the per-rank '" + o.info.path +
                                    "' when the chief writes every shard (chief_writes_all)");
      }
      if (o.check_replicas) {
        return InvalidArgumentError("cannot check the replicas of '" + o.info.path +
                                    "' when the chief writes every shard (chief_writes_all)");
      }
    }
  }
  Status status = Status::Ok();
  if (comm_->rank() == 0) {
    auto lock = LockDirectory(env_, options_.directory, ThisProcessAsHolder());
    if (lock.ok()) {
      directory_lock_ = std::move(*lock);
    } else {
      status = lock.status();
    }
  }
  status = comm_->BroadcastStatus(status, 0);
  directory_open_ = status.ok();
  if (!directory_open_) directory_lock_.reset();
  return status;
}

Status CheckpointManager::Save(bool force) {
  HOLDFAST_RETURN_IF_ERROR(OpenDirectory());
  const int64_t step = checkpoint_->step();
  const Status polled = Poll();
  // Every rank has the same step and history, so all skip together.
  if (step == last_committed_step_ || (save_in_flight() && async_->ticket->step == step)) {
    return polled;
  }
  if (!force && options_.checkpoint_interval > 0 && interval_start_step_ >= 0 &&
      step - interval_start_step_ < options_.checkpoint_interval) {
    return polled;
  }
  if (!options_.async) return SaveSync();
  const Status started = StartAsyncSave();
  return polled.ok() ? started : polled;
}

Status CheckpointManager::SaveSync() {
  ++stats_.started;
  const int64_t step = checkpoint_->step();
  const bool chief = comm_->rank() == 0;
  const std::string name = CheckpointName(step);
  const std::string& dir = options_.directory;

  // Phase 0: the chief opens a prepare area with a fresh name.
  std::string area;
  if (chief) {
    const std::string tmp = JoinPath(dir, PrepareAreaName(step, RandomNonce()));
    Status s = env_->CreateDir(dir);
    if (s.ok()) s = env_->CreateDir(tmp);
    // (append, not "+" + ...: GCC 12 warns falsely on the latter, bug 105651)
    area = s.ok() ? std::string("+").append(tmp) : std::string("-").append(s.ToString());
  }
  area = comm_->BroadcastString(area, 0);
  if (area[0] == '-') {
    ++stats_.failed;
    return AbortedError("checkpoint " + name + " not saved: " + area.substr(1));
  }
  const Status captured = checkpoint_->Capture(comm_->rank());
  const Ticket ticket = MakeTicket(step, area.substr(1));

  // Phase 1 (prepare): each writer writes its shard and votes with its size
  // and hash (known as soon as it is written); then, while every writer
  // fsyncs its shard, the chief writes the manifest and fsyncs it and the
  // prepare area along with its own shard. All the fsyncs of a save overlap:
  // the prepare phase costs one flush, not three in a row.
  std::unique_ptr<WritableFile> shard;
  std::string vote = "{}";
  if (comm_->rank() < ticket.writers) {
    vote = captured.ok() ? WriteOwnShard(ticket, ShardOf(ticket, LiveSlices(ticket.writers)),
                                         &shard, /*direct=*/false)
                         : FailedVote(captured);
  }
  const std::vector<std::string> votes = comm_->Gather(vote, 0);
  std::vector<std::function<Status()>> syncs;
  if (shard) syncs.emplace_back([&shard] { return SyncAndClose(*shard); });
  StatusOr<std::unique_ptr<WritableFile>> manifest = std::unique_ptr<WritableFile>();
  if (chief) {
    manifest = WriteManifest(ticket, votes);
    if (manifest.ok()) {
      syncs.emplace_back([&manifest] { return SyncAndClose(**manifest); });
      syncs.emplace_back([this, &ticket] { return env_->SyncDir(ticket.area); });
    }
  }
  const std::vector<Status> synced = comm_->GatherStatus(SyncTogether(syncs), 0);

  // Phase 2 (decide): the chief commits or aborts; everyone learns which.
  Status outcome = Status::Ok();
  if (chief) {
    std::string failures;
    if (!manifest.ok()) failures = manifest.status().message();
    for (size_t r = 0; r < synced.size(); ++r) {
      if (synced[r].ok()) continue;
      if (!failures.empty()) failures += "; ";
      failures += "rank " + std::to_string(r) + ": " + synced[r].ToString();
    }
    outcome = failures.empty() ? Publish(ticket) : AbortCommit(ticket, failures);
  }
  Status committed = comm_->BroadcastStatus(outcome, 0);
  if (committed.ok()) {
    last_committed_step_ = interval_start_step_ = step;
    ++stats_.committed;
  } else {
    ++stats_.failed;
  }
  return committed;
}

Status CheckpointManager::SaveAndWait() {
  HOLDFAST_RETURN_IF_ERROR(OpenDirectory());
  const Status previous = WaitForSave();
  if (last_committed_step_ == checkpoint_->step()) return Status::Ok();
  if (!previous.ok() && comm_->rank() == 0) {
    std::fprintf(stderr, "holdfast: warning: %s\n", previous.ToString().c_str());
  }
  return SaveSync();
}

}  // namespace holdfast
