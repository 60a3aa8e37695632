// What CheckpointManager's units share, and nothing else includes: the save
// ticket, the asynchronous save's state, and small helpers. The units:
// manager.cc (saving, the synchronous two-phase commit), commit.cc (the
// chief's commit: manifest, publish, abort), async_save.cc (the
// asynchronous pipeline), restore.cc, retention.cc (listing and the keep
// policy).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/env.h"
#include "checkpoint/internal/background_worker.h"
#include "checkpoint/manager.h"
#include "core/check.h"
#include "core/status.h"

namespace holdfast {

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
  // The blobs this rank writes a part of (WrittenBlobs), in shard order.
  struct Blob {
    std::string name;
    uint64_t floats = 0;  // 4-byte words
    Placement placement = Placement::kSplit;
  };
  std::vector<Blob> blobs;
  // What the manifest says of every tracked object (the chief's).
  std::vector<ObjectInfo> objects;
  // Replicated objects checked across ranks: path -> XXH3 of this rank's copy.
  std::map<std::string, std::string> replica_hashes;
  // TrackedHash of this rank's objects: every writer's must be the chief's.
  std::string tracked;
};

namespace internal {

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

std::string UtcNow(double unix_seconds);
double UnixNow();
Status SyncAndClose(WritableFile& file);
// Runs every call at once, each but the first on a thread of its own, and
// returns the first error. For the fsyncs of one save: fsyncs that overlap
// share one journal commit and one flush of the disk's cache, where in a row
// each pays its own (~4 ms here, as long as writing 10 MB).
Status SyncTogether(const std::vector<std::function<Status()>>& calls);

// Why a rank cannot find what another wrote into the checkpoint directory.
inline constexpr const char* kNoSharedDirectory =
    "the ranks do not share the checkpoint directory (no shared filesystem?): "
    "give every rank the same directory, or let the chief write everything (chief_writes_all, "
    "--chief-writes-all)";

// A writer's vote when it has no shard to offer.
std::string FailedVote(const Status& why);
// Removes a committed checkpoint: the manifest first, so that a crash half
// way leaves a directory that is plainly not a checkpoint.
Status RemoveCheckpoint(Env* env, const std::string& path);
// 16 hex digits for prepare-area names that no other run or save used.
std::string RandomNonce();
// What every rank must track alike: each object's path and description
// (kind, dtype and shape, signature, type and version), hashed.
std::string TrackedHash(const std::vector<TrackedObject>& objects);
// Where a writer leaves its vote for a chief that commits in the background.
std::string VoteFile(const std::string& area, int rank);
inline constexpr uint64_t kMaxVoteBytes = 1 << 16;

}  // namespace internal

struct CheckpointManager::AsyncSave {
  // This rank's slice of every blob, copied at the save step. Between
  // saves the writer thread may be reserving them: wait for it first.
  std::vector<internal::SnapshotBuffer> buffers;
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

}  // namespace holdfast
