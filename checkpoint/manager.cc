#include "checkpoint/manager.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "checkpoint/internal/background_worker.h"
#include "checkpoint/internal/manifest.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/internal/snapshot_copy.h"
#include "checkpoint/reader.h"
#include "checkpoint/retention.h"
#include "checkpoint/run_layout.h"
#include "core/check.h"
#include "core/data_order.h"
#include "core/hash.h"
#include "core/version.h"

namespace holdfast {
namespace {

using internal::ShardToWrite;
using nlohmann::json;

using internal::kMaxManifestBytes;

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

// Runs every call at once, each but the first on a thread of its own, and
// returns the first error. For the fsyncs of one save: fsyncs that overlap
// share one journal commit and one flush of the disk's cache, where in a row
// each pays its own (~4 ms here, as long as writing 10 MB).
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

// Why a rank cannot find what another wrote into the checkpoint directory.
constexpr const char* kNoSharedDirectory =
    "the ranks do not share the checkpoint directory (no shared filesystem?): "
    "give every rank the same directory, or let the chief write everything (chief_writes_all, "
    "--chief-writes-all)";

// A writer's vote when it has no shard to offer.
std::string FailedVote(const Status& why) {
  return json({{"ok", false}, {"error", why.ToString()}}).dump();
}

// Removes a committed checkpoint: the manifest first, so that a crash half
// way leaves a directory that is plainly not a checkpoint.
Status RemoveCheckpoint(Env* env, const std::string& path) {
  const std::string manifest = JoinPath(path, kManifestFile);
  if (env->Exists(manifest)) HOLDFAST_RETURN_IF_ERROR(env->RemoveFile(manifest));
  return RemoveTree(env, path);
}

// A checkpoint has to belong to this model and optimizer (its blobs' names
// and sizes are checked as it is read into the live state).
Status CheckFitsLiveState(const CheckpointContents& c, Checkpoint& live) {
  if (c.model_signature != live.ModelSignature()) {
    return FailedPreconditionError("it was written for another model: it has " + c.model_signature +
                                   ", this run has " + live.ModelSignature());
  }
  if (c.optimizer_signature != live.OptimizerSignature()) {
    return FailedPreconditionError("it was written for another optimizer: it has " +
                                   c.optimizer_signature + ", this run has " +
                                   live.OptimizerSignature());
  }
  return Status::Ok();
}

}  // namespace

// What a save commits, fixed when it begins: an asynchronous save commits
// it later, while training has moved on.
struct CheckpointManager::Ticket {
  int64_t step = 0;
  std::string name;  // "ckpt-<step>"
  std::string area;  // the prepare area
  int world = 1, writers = 1;
  std::map<std::string, int64_t> counters;
  std::map<std::string, double> values;
  std::string model_signature, optimizer_signature;
  std::vector<std::pair<std::string, uint64_t>> blobs;  // names and sizes in floats
};

namespace {

// Memory for one slice's snapshot, kept from save to save: after the first
// save (or ReserveSnapshot) the copy touches no fresh memory. The bytes start
// `phase` bytes into a block, where the shard file will hold them.
class SnapshotBuffer {
 public:
  // The digests of the shard's checksum chunks inside this slice.
  std::vector<uint64_t> digests;

  // Makes room for `bytes` at any phase, faulting every page in now rather
  // than in the copy.
  void Reserve(size_t bytes) {
    if (memory_ != nullptr && bytes + kDirectIoAlignment <= capacity_) return;
    capacity_ = (bytes / kDirectIoAlignment + 2) * kDirectIoAlignment;
    memory_.reset(static_cast<std::byte*>(std::aligned_alloc(kDirectIoAlignment, capacity_)));
    HOLDFAST_CHECK(memory_ != nullptr, "out of memory for a checkpoint snapshot");
    for (size_t i = 0; i < capacity_; i += kDirectIoAlignment) memory_.get()[i] = std::byte{0};
  }

  std::span<std::byte> Place(size_t bytes, size_t phase) {
    Reserve(bytes);
    return {memory_.get() + phase, bytes};
  }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  std::unique_ptr<std::byte, Free> memory_;
  size_t capacity_ = 0;
};

}  // namespace

struct CheckpointManager::AsyncSave {
  // This rank's slice of every blob, copied at the save step. Between
  // saves the writer thread may be reserving them: wait for it first.
  std::vector<SnapshotBuffer> buffers;
  std::vector<size_t> reserved;  // the slice sizes reserved for (training thread)
  std::string session;           // part of prepare area names, agreed at the first save

  // The save in flight (training thread only).
  std::shared_ptr<const Ticket> ticket;
  int64_t sequence_at_start = 0;
  bool commit_started = false;  // chief

  // Set by writer jobs; read by the training thread after WaitIdle(), or
  // (shard_done) at any time.
  std::string vote;
  Status commit_status = Status::Ok();
  std::atomic<bool> shard_done{false};

  internal::BackgroundWorker worker{/*nice=*/10};  // last: its thread goes first
};

namespace {

// One piece of a snapshot: bytes [begin, end) of slice `slice`, and where
// their digest goes when they are a whole checksum chunk of the file.
struct CopyPiece {
  size_t slice, begin, end;
  uint64_t* digest;
};

// Cuts each slice, which the file holds from offsets[i], at the file's
// checksum chunk boundaries, and sizes each buffer's digests for the whole
// chunks inside its slice.
std::vector<CopyPiece> CopyPieces(const std::vector<std::span<const std::byte>>& from,
                                  const std::vector<uint64_t>& offsets,
                                  std::vector<SnapshotBuffer>& buffers) {
  constexpr uint64_t kChunk = internal::kChecksumChunkBytes;
  std::vector<CopyPiece> pieces;
  for (size_t i = 0; i < from.size(); ++i) {
    const uint64_t offset = offsets[i], end = offset + from[i].size();
    const uint64_t first = (offset + kChunk - 1) / kChunk, last = end / kChunk;
    buffers[i].digests.resize(last > first ? last - first : 0);
    uint64_t at = offset;
    for (uint64_t chunk = first; chunk < last; ++chunk) {
      if (at < chunk * kChunk) pieces.push_back({i, at - offset, chunk * kChunk - offset, nullptr});
      at = (chunk + 1) * kChunk;
      pieces.push_back(
          {i, chunk * kChunk - offset, at - offset, &buffers[i].digests[chunk - first]});
    }
    if (at < end) pieces.push_back({i, at - offset, end - offset, nullptr});
  }
  return pieces;
}

// The snapshot copy, split over the training's OpenMP threads (memory
// bandwidth one core cannot use alone, and cores that would otherwise
// wait), hashing each whole checksum chunk from the source while it is in
// the cache: the writer then reads the copy only to send it, or not at all.
void ParallelCopy(const std::vector<std::span<const std::byte>>& from,
                  const std::vector<std::span<std::byte>>& to,
                  const std::vector<CopyPiece>& pieces) {
  const int64_t n = static_cast<int64_t>(pieces.size());
#pragma omp parallel for schedule(static) if (n > 32)
  for (int64_t k = 0; k < n; ++k) {
    const CopyPiece& p = pieces[static_cast<size_t>(k)];
    const std::byte* source = from[p.slice].data() + p.begin;
    std::byte* copy = to[p.slice].data() + p.begin;
    if (p.digest != nullptr) {
      *p.digest = internal::StreamingCopyAndHash(source, copy, p.end - p.begin);
    } else {
      internal::StreamingCopy(source, copy, p.end - p.begin);
    }
  }
}

// 16 hex digits for prepare-area names that no other run or save used.
std::string RandomNonce() {
  std::random_device random;
  char nonce[17];
  std::snprintf(nonce, sizeof nonce, "%08x%08x", random(), random());
  return nonce;
}

// Where a writer leaves its vote for a chief that commits in the background.
std::string VoteFile(const std::string& area, int rank) {
  return JoinPath(area, ".vote-" + std::to_string(rank));
}
constexpr uint64_t kMaxVoteBytes = 1 << 16;

}  // namespace

CheckpointManager::CheckpointManager(Checkpoint* checkpoint, Communicator* comm,
                                     CheckpointOptions options)
    : checkpoint_(checkpoint),
      comm_(comm),
      options_(std::move(options)),
      env_(options_.env != nullptr ? options_.env : Env::Default()) {
  HOLDFAST_CHECK(checkpoint_ != nullptr && comm_ != nullptr, "CheckpointManager needs both");
  if (options_.max_to_keep < 1) options_.max_to_keep = 1;
  if (options_.save_before_preemption) {
    preemption_ = std::make_unique<PreemptionHandler>(options_.preemption);
  }
  if (options_.async) {
    HOLDFAST_CHECK(options_.replica != nullptr, "async checkpoints need the training's Replica");
    async_ = std::make_unique<AsyncSave>();
  }
}

CheckpointManager::~CheckpointManager() = default;

bool CheckpointManager::save_in_flight() const { return async_ && async_->ticket; }

StatusOr<bool> CheckpointManager::SaveIfPreempted(Replica& replica) {
  if (preemption_ && preemption_->requested()) replica.RequestStop();
  if (replica.control().stop_requests == 0) return false;
  HOLDFAST_RETURN_IF_ERROR(SaveAndWait());
  return true;
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
  for (const NamedBlob& blob : checkpoint_->Blobs())
    t.blobs.emplace_back(blob.name, blob.values.size());
  return t;
}

CheckpointManager::Slices CheckpointManager::LiveSlices(int writers) const {
  Slices slices;
  for (const NamedBlob& blob : checkpoint_->Blobs()) {
    const Range r = ReplicaSlice(static_cast<int64_t>(blob.values.size()), comm_->rank(), writers);
    slices.push_back(std::as_bytes(blob.values.subspan(r.begin, r.size())));
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
    const Range r =
        ReplicaSlice(static_cast<int64_t>(ticket.blobs[i].second), rank, ticket.writers);
    shard.slices.push_back({ticket.blobs[i].first,
                            ticket.blobs[i].second,
                            static_cast<uint64_t>(r.begin),
                            slices[i],
                            {}});
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
  return json({{"ok", true},
               {"file", name},
               {"bytes", written->bytes},
               {"xxh3", HexU64(written->checksum)}})
      .dump();
}

Status CheckpointManager::Save(bool force) {
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
  const Ticket ticket = MakeTicket(step, area.substr(1));

  // Phase 1 (prepare): each writer writes its shard and votes with its size
  // and hash (known as soon as it is written); then, while every writer
  // fsyncs its shard, the chief writes the manifest and fsyncs it and the
  // prepare area along with its own shard. All the fsyncs of a save overlap:
  // the prepare phase costs one flush, not three in a row.
  std::unique_ptr<WritableFile> shard;
  std::string vote = "{}";
  if (comm_->rank() < ticket.writers) {
    vote = WriteOwnShard(ticket, ShardOf(ticket, LiveSlices(ticket.writers)), &shard,
                         /*direct=*/false);
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

Status CheckpointManager::StartAsyncSave() {
  AsyncSave& a = *async_;
  if (a.ticket) {
    // At most one in flight: this one waits for the previous to resolve.
    const auto t0 = std::chrono::steady_clock::now();
    const Status previous = WaitForSave();
    ++stats_.waits;
    stats_.wait_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!previous.ok() && comm_->rank() == 0) {
      std::fprintf(stderr, "holdfast: warning: %s\n", previous.ToString().c_str());
    }
  }
  if (a.session.empty()) {
    // Once per manager, collective: a name no earlier run used.
    a.session = comm_->BroadcastString(RandomNonce(), 0);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t step = checkpoint_->step();
  const int rank = comm_->rank();
  auto ticket = std::make_shared<const Ticket>(
      MakeTicket(step, JoinPath(options_.directory, PrepareAreaName(step, "a" + a.session))));
  const bool writer = rank < ticket->writers;
  ShardToWrite own;
  if (writer) {
    // The snapshot: the only part of an asynchronous save training waits
    // for. Each copy starts at the offset within a page at which the shard
    // file will hold it, so the direct file sends it to the device as it is.
    // The shard is laid out from the live slices, then pointed at the
    // copies and their chunk digests.
    const Slices live = LiveSlices(ticket->writers);
    own = ShardOf(*ticket, live);
    const std::vector<uint64_t> offsets = internal::SliceFileOffsets(own);
    a.worker.WaitIdle();  // done reserving the buffers
    a.buffers.resize(live.size());
    std::vector<std::span<std::byte>> copies;
    for (size_t i = 0; i < live.size(); ++i) {
      copies.push_back(a.buffers[i].Place(live[i].size(), offsets[i] % kDirectIoAlignment));
    }
    ParallelCopy(live, copies, CopyPieces(live, offsets, a.buffers));
    for (size_t i = 0; i < live.size(); ++i) {
      own.slices[i].data = copies[i];
      own.slices[i].chunk_digests = a.buffers[i].digests;
    }
  }
  a.ticket = ticket;
  a.sequence_at_start = options_.replica->control().sequence;
  a.commit_started = false;
  a.vote = "{}";
  a.commit_status = Status::Ok();
  a.shard_done = !writer;
  if (rank == 0) options_.replica->SetCheckpointFailed(false);
  if (writer) {
    // Raised now, before the next step's control words are taken: every
    // rank counts this writer from the next step until its shard is done
    // (on the chief: until the commit is done).
    options_.replica->SetCheckpointBusy(true);
    a.worker.Enqueue([this, ticket, own = std::move(own), rank] {
      AsyncSave& a = *async_;
      Status s = env_->CreateDir(options_.directory);
      if (s.ok()) s = env_->CreateDir(ticket->area);  // whichever rank comes first
      std::unique_ptr<WritableFile> shard;
      a.vote = s.ok() ? WriteOwnShard(*ticket, own, &shard, /*direct=*/true) : FailedVote(s);
      if (shard) {
        s = SyncAndClose(*shard);
        if (!s.ok()) a.vote = FailedVote(s);
      }
      if (rank != 0) {
        // The chief reads it once every rank's busy word is down. Losing it
        // (a full disk) aborts the save, as a failed shard would; only this
        // rank can then say why.
        const Status sent =
            AtomicWriteFile(env_, VoteFile(ticket->area, rank), a.vote, Durability::kHint);
        if (!sent.ok()) {
          const json vote = json::parse(a.vote);
          const std::string why = vote.value("ok", false)
                                      ? "cannot report its shard: " + sent.ToString()
                                      : vote.value("error", sent.ToString());
          std::fprintf(stderr, "holdfast: rank %d: checkpoint %s not saved: %s\n", rank,
                       ticket->name.c_str(), why.c_str());
        }
      }
      a.shard_done = true;
      if (rank != 0) options_.replica->SetCheckpointBusy(false);  // last: nothing after it
    });
  }
  ++stats_.started;
  interval_start_step_ = step;  // a failed async save is retried a full interval later
  stats_.snapshot_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return Status::Ok();
}

void CheckpointManager::ReserveSnapshot() {
  AsyncSave& a = *async_;
  const int writers = Writers();
  if (comm_->rank() >= writers) return;
  std::vector<size_t> sizes;
  for (const std::span<const std::byte> slice : LiveSlices(writers)) sizes.push_back(slice.size());
  if (sizes == a.reserved) return;
  a.reserved = sizes;
  a.worker.Enqueue([&a, sizes = std::move(sizes)] {
    a.buffers.resize(sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) a.buffers[i].Reserve(sizes[i]);
  });
}

Status CheckpointManager::Poll() {
  if (!save_in_flight()) {
    if (async_) ReserveSnapshot();
    return Status::Ok();
  }
  AsyncSave& a = *async_;
  const StepControl& control = options_.replica->control();
  if (control.sequence <= a.sequence_at_start) return Status::Ok();  // no step since it began
  const bool chief = comm_->rank() == 0;
  if (chief && !a.commit_started && control.checkpoint_busy == 1 && a.shard_done) {
    // Only the chief's own word was up: every other shard is written.
    a.commit_started = true;
    std::shared_ptr<const Ticket> ticket = a.ticket;
    a.worker.Enqueue([this, ticket] {
      AsyncSave& a = *async_;
      std::vector<std::string> votes = {a.vote};
      for (int r = 1; r < ticket->world; ++r) {
        if (r >= ticket->writers) {
          votes.emplace_back("{}");
          continue;
        }
        auto vote = env_->ReadFile(VoteFile(ticket->area, r), kMaxVoteBytes);
        votes.push_back(vote.ok() ? *vote
                                  : FailedVote(NotFoundError("left no vote in " + ticket->area +
                                                             ": its stderr says why, if it "
                                                             "can write there; otherwise " +
                                                             kNoSharedDirectory)));
      }
      a.commit_status = CommitOnChief(*ticket, votes);
      // Failed first, then busy down: every rank sees both at one step.
      options_.replica->SetCheckpointFailed(!a.commit_status.ok());
      options_.replica->SetCheckpointBusy(false);
    });
    return Status::Ok();
  }
  if (control.checkpoint_busy > 0) return Status::Ok();
  // Resolved, at this same step on every rank. The writer has lowered its
  // word as its last act; waiting for it to return costs nothing.
  a.worker.WaitIdle();
  Status outcome = Status::Ok();
  if (chief) {
    outcome = a.commit_status;
  } else if (control.checkpoint_failed > 0) {
    outcome = AbortedError("checkpoint " + a.ticket->name +
                           " not committed, the previous one stays (the chief says why)");
  }
  return FinishAsyncSave(outcome);
}

Status CheckpointManager::WaitForSave() {
  if (!save_in_flight()) return Status::Ok();
  AsyncSave& a = *async_;
  a.worker.WaitIdle();
  const std::vector<std::string> votes = comm_->Gather(a.vote, 0);
  Status outcome = Status::Ok();
  if (comm_->rank() == 0) {
    outcome = a.commit_started ? a.commit_status : CommitOnChief(*a.ticket, votes);
  }
  const Status status = comm_->BroadcastStatus(outcome, 0);
  options_.replica->SetCheckpointBusy(false);
  return FinishAsyncSave(status);
}

Status CheckpointManager::FinishAsyncSave(Status outcome) {
  if (outcome.ok()) {
    last_committed_step_ = async_->ticket->step;
    ++stats_.committed;
  } else {
    ++stats_.failed;
  }
  async_->ticket.reset();
  return outcome;
}

Status CheckpointManager::SaveAndWait() {
  const Status previous = WaitForSave();
  if (last_committed_step_ == checkpoint_->step()) return Status::Ok();
  if (!previous.ok() && comm_->rank() == 0) {
    std::fprintf(stderr, "holdfast: warning: %s\n", previous.ToString().c_str());
  }
  return SaveSync();
}

Status CheckpointManager::CommitOnChief(const Ticket& ticket,
                                        const std::vector<std::string>& votes) {
  StatusOr<std::unique_ptr<WritableFile>> manifest = WriteManifest(ticket, votes);
  if (!manifest.ok()) return AbortCommit(ticket, manifest.status().message());
  const Status synced = SyncTogether({[&manifest] { return SyncAndClose(**manifest); },
                                      [this, &ticket] { return env_->SyncDir(ticket.area); }});
  if (!synced.ok()) return AbortCommit(ticket, synced.ToString());
  return Publish(ticket);
}

StatusOr<std::unique_ptr<WritableFile>> CheckpointManager::WriteManifest(
    const Ticket& ticket, const std::vector<std::string>& votes) {
  json shards = json::array();
  std::string failures;
  for (size_t r = 0; r < votes.size(); ++r) {
    const json vote = json::parse(votes[r], nullptr, /*allow_exceptions=*/false);
    if (vote.is_object() && vote.empty()) continue;  // not a writer
    if (!vote.is_object() || !vote.value("ok", false)) {
      if (!failures.empty()) failures += "; ";
      failures += "rank ";
      failures += std::to_string(r);
      failures += ": ";
      failures += vote.is_object() ? vote.value("error", "no error given") : "unreadable vote";
      continue;
    }
    shards.push_back(
        {{"file", vote["file"]}, {"bytes", vote["bytes"]}, {"xxh3", vote["xxh3"]}, {"rank", r}});
  }
  if (!failures.empty()) return AbortedError(failures);
  // Votes left by writers of an asynchronous save are not part of it.
  for (int r = 1; r < ticket.world; ++r) {
    const std::string vote_file = VoteFile(ticket.area, r);
    if (env_->Exists(vote_file)) (void)env_->RemoveFile(vote_file);
  }
  const double now = UnixNow();
  json manifest = {
      {"format", "holdfast-checkpoint"},
      {"format_version", internal::kShardFormatVersion},
      {"holdfast_version", HOLDFAST_VERSION},
      {"step", ticket.step},
      {"world_size", ticket.world},
      {"created_unix", now},
      {"created_utc", UtcNow(now)},
      {"model_signature", ticket.model_signature},
      {"optimizer_signature", ticket.optimizer_signature},
      {"counters", ticket.counters},
      {"shards", shards},
  };
  json blobs = json::array();
  for (const auto& [blob, floats] : ticket.blobs) {
    blobs.push_back({{"name", blob}, {"floats", floats}});
  }
  manifest["blobs"] = blobs;
  manifest["checksum"] = internal::ManifestChecksum(manifest);
  const std::string text = manifest.dump(2) + "\n";
  StatusOr<std::unique_ptr<WritableFile>> file =
      env_->NewWritableFile(JoinPath(ticket.area, kManifestFile));
  if (!file.ok()) return AbortedError(file.status().ToString());
  const Status written = (*file)->Append(text);
  if (!written.ok()) return AbortedError(written.ToString());
  return file;
}

Status CheckpointManager::Publish(const Ticket& ticket) {
  const std::string final_dir = JoinPath(options_.directory, ticket.name);
  const std::string& name = ticket.name;
  if (env_->Exists(final_dir)) {
    if (ReadCheckpoint(env_, final_dir).ok()) {
      // This step was committed before (a resumed run saving the same step,
      // or a retry after a failed directory fsync): resume is exact, so it
      // holds this state already. Its rename may not be durable yet.
      (void)RemoveTree(env_, ticket.area);
      return env_->SyncDir(options_.directory);
    }
    // A damaged or half-deleted checkpoint of this step: replace it. Its
    // manifest goes first, so a crash from here on leaves the previous
    // checkpoint as the one restore picks.
    const Status removed = RemoveCheckpoint(env_, final_dir);
    if (!removed.ok()) {
      return AbortCommit(ticket, "cannot replace the damaged " + name + ": " + removed.ToString());
    }
  }
  // The commit point: after this rename (made durable by the fsync of the
  // directory) the checkpoint exists.
  Status s = env_->Rename(ticket.area, final_dir);
  if (!s.ok()) return AbortCommit(ticket, s.ToString());
  s = env_->SyncDir(options_.directory);
  if (!s.ok()) {
    return AbortedError("checkpoint " + name + " may not be durable: " + s.ToString());
  }
  // LATEST is a hint for people and tools; recovery trusts the manifests.
  // So it costs no fsync: a power cut may leave the previous hint.
  s = AtomicWriteFile(env_, JoinPath(options_.directory, kLatestFile), name + "\n",
                      Durability::kHint);
  if (!s.ok())
    std::fprintf(stderr, "holdfast: warning: LATEST not updated: %s\n", s.ToString().c_str());
  s = ApplyKeepPolicy();
  if (!s.ok()) std::fprintf(stderr, "holdfast: warning: keep policy: %s\n", s.ToString().c_str());
  return Status::Ok();
}

Status CheckpointManager::AbortCommit(const Ticket& ticket, const std::string& why) {
  (void)RemoveTree(env_, ticket.area);  // best effort: recovery removes leftovers too
  return AbortedError("checkpoint " + ticket.name +
                      " not committed, the previous one stays: " + why);
}

StatusOr<std::optional<int64_t>> CheckpointManager::RestoreLatest() {
  (void)WaitForSave();  // its outcome is on disk for the chief to find
  const std::string& dir = options_.directory;
  std::optional<CheckpointContents> chosen;
  Status status = Status::Ok();
  if (comm_->rank() == 0 && env_->Exists(dir)) {
    auto entries = ListCheckpoints(env_, dir);
    if (!entries.ok()) {
      status = entries.status();
    } else {
      BlobDestinations live;
      for (const NamedBlob& blob : checkpoint_->Blobs()) live.emplace(blob.name, blob.values);
      std::string damaged;
      for (auto it = entries->rbegin(); it != entries->rend(); ++it) {  // newest first
        // An interrupted save: never committed, never read.
        if (it->kind == DirectoryEntry::kPrepareArea) (void)RemoveTree(env_, it->path);
      }
      for (auto it = entries->rbegin(); it != entries->rend(); ++it) {
        // Uncommitted (a removal cut short, a save's rename undone): never read.
        if (it->kind != DirectoryEntry::kCommitted) continue;
        const std::string& path = it->path;
        const std::string& name = it->name;
        // The manifest alone tells whether it belongs to this model; then
        // the shards are read straight into the live state, which is
        // written only once the whole checkpoint has been verified.
        auto loaded = ReadManifest(env_, path);
        if (loaded.ok()) {
          Status fits = CheckFitsLiveState(*loaded, *checkpoint_);
          std::string warning;
          if (fits.ok() && Layout() != nullptr) {
            fits = CheckRunLayout(loaded->counters, loaded->world_size, *Layout(),
                                  omp_get_max_threads(), comm_->size(), &warning);
          }
          if (!fits.ok()) loaded = fits;
          if (!warning.empty()) {
            std::fprintf(stderr, "holdfast: warning: checkpoint %s: %s\n", path.c_str(),
                         warning.c_str());
          }
        }
        if (loaded.ok()) loaded = ReadCheckpoint(env_, path, &live);
        if (loaded.ok()) {
          chosen = std::move(*loaded);
          break;
        }
        if (loaded.status().code() == StatusCode::kFailedPrecondition) {
          status = loaded.status().WithContext("checkpoint " + path);
          break;
        }
        std::fprintf(stderr, "holdfast: checkpoint %s is damaged (%s); falling back\n",
                     path.c_str(), loaded.status().message().c_str());
        if (!damaged.empty()) damaged += "; ";
        damaged += name;
        damaged += ": ";
        damaged += loaded.status().message();
      }
      if (status.ok() && !chosen && !damaged.empty()) {
        status = DataLossError("no usable checkpoint in " + dir + " (" + damaged + ")");
      }
    }
  }
  // Everyone learns the outcome; then the chief's state reaches every rank.
  HOLDFAST_RETURN_IF_ERROR(comm_->BroadcastStatus(status, 0));
  int64_t found = chosen ? 1 : 0;
  comm_->Broadcast(&found, sizeof found, 0);
  if (comm_->rank() == 0) {
    if (const char* report = std::getenv(kRestoreReportEnv); report != nullptr && *report) {
      (void)AtomicWriteFile(env_, report,
                            chosen ? "step " + std::to_string(chosen->step) + "\n" : "none\n");
    }
  }
  if (found == 0) {
    // A fresh start: checkpoint_interval counts from here.
    interval_start_step_ = checkpoint_->step();
    return std::optional<int64_t>();
  }

  for (const NamedBlob& blob : checkpoint_->Blobs()) {
    comm_->Broadcast(blob.values.data(), blob.values.size_bytes(), 0);
  }
  json scalars;
  if (chosen) {
    scalars = {{"step", chosen->step}, {"counters", chosen->counters}};
    // Doubles travel as their bit patterns: exact, whatever JSON would print.
    json values = json::object();
    for (const auto& [key, v] : chosen->values) {
      uint64_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      values[key] = bits;
    }
    scalars["values"] = values;
  }
  scalars = json::parse(comm_->BroadcastString(chosen ? scalars.dump() : "", 0));
  const int64_t step = scalars["step"].get<int64_t>();
  checkpoint_->optimizer().set_iterations(step);
  checkpoint_->counters = scalars["counters"].get<std::map<std::string, int64_t>>();
  EraseRunLayout(&checkpoint_->counters);  // the manager's record, not the user's state
  checkpoint_->values.clear();
  for (const auto& [key, bits] : scalars["values"].items()) {
    const uint64_t b = bits.get<uint64_t>();
    double v;
    std::memcpy(&v, &b, sizeof v);
    checkpoint_->values[key] = v;
  }
  // All ranks confirm they restored the same state.
  const std::vector<int64_t> check = {step, static_cast<int64_t>(Xxh3(scalars.dump()))};
  const Communicator::MinMax range = comm_->AllReduceMinMax(check);
  HOLDFAST_CHECK(range.min == range.max, "ranks restored different checkpoints");
  last_committed_step_ = interval_start_step_ = step;
  return std::optional<int64_t>(step);
}

StatusOr<std::optional<int64_t>> CheckpointManager::RestoreOrInitialize(
    const std::function<void()>& initialize) {
  StatusOr<std::optional<int64_t>> restored = RestoreLatest();
  if (restored.ok() && !restored->has_value() && initialize) initialize();
  return restored;
}

std::vector<CheckpointInfo> CheckpointManager::Checkpoints() const {
  std::vector<CheckpointInfo> out;
  auto entries = ListCheckpoints(env_, options_.directory);
  if (!entries.ok()) return out;
  for (const DirectoryEntry& e : *entries) {
    if (e.kind != DirectoryEntry::kCommitted) continue;
    auto manifest = ReadManifest(env_, e.path);
    if (!manifest.ok()) continue;  // damaged: not listed
    out.push_back({e.name, e.path, manifest->step, manifest->created_unix, manifest->bytes(),
                   manifest->world_size});
  }
  return out;
}

std::optional<CheckpointInfo> CheckpointManager::Latest() const {
  std::vector<CheckpointInfo> all = Checkpoints();
  if (all.empty()) return std::nullopt;
  return std::move(all.back());
}

Status CheckpointManager::ApplyKeepPolicy() {
  const std::vector<CheckpointInfo> all = Checkpoints();
  const size_t keep_newest = static_cast<size_t>(options_.max_to_keep);
  bool removed = false;
  // Directories named like checkpoints that no manifest commits (a removal
  // cut short, a manifest destroyed) and older than every kept checkpoint
  // can never be restored: they are garbage.
  if (!all.empty()) {
    HOLDFAST_ASSIGN_OR_RETURN(std::vector<DirectoryEntry> entries,
                              ListCheckpoints(env_, options_.directory));
    const size_t first_kept = all.size() - std::min(all.size(), keep_newest);
    for (const DirectoryEntry& e : entries) {
      if (e.kind == DirectoryEntry::kPrepareArea || e.step >= all[first_kept].step) continue;
      if (!ReadManifest(env_, e.path).ok()) {
        HOLDFAST_RETURN_IF_ERROR(RemoveTree(env_, e.path));
        removed = true;
      }
    }
  }
  std::vector<double> created;
  for (const CheckpointInfo& c : all) created.push_back(c.created_unix);
  for (size_t i : CheckpointsToRemove(created, options_.max_to_keep, options_.keep_every_n_hours)) {
    HOLDFAST_RETURN_IF_ERROR(RemoveCheckpoint(env_, all[i].path));
    removed = true;
  }
  // Removals are made durable so that what was removed stays removed; a
  // commit that removes nothing costs no directory fsync here.
  return removed ? env_->SyncDir(options_.directory) : Status::Ok();
}

Status CheckpointManager::DeleteAll() {
  (void)WaitForSave();
  Status s = Status::Ok();
  if (comm_->rank() == 0) {
    auto entries = ListCheckpoints(env_, options_.directory);
    if (entries.ok()) {
      for (const DirectoryEntry& e : *entries) {
        s = e.kind == DirectoryEntry::kPrepareArea ? RemoveTree(env_, e.path)
                                                   : RemoveCheckpoint(env_, e.path);
        if (!s.ok()) break;
      }
      const std::string latest = JoinPath(options_.directory, kLatestFile);
      if (s.ok() && env_->Exists(latest)) s = env_->RemoveFile(latest);
      if (s.ok()) s = env_->SyncDir(options_.directory);
    }
  }
  return comm_->BroadcastStatus(s, 0);
}

}  // namespace holdfast
