// CheckpointManager, the asynchronous pipeline: snapshot, background write,
// the outcome through the replica's control words.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/internal/manager_internal.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/internal/snapshot_copy.h"
#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "core/check.h"
#include "core/data_order.h"

namespace holdfast {

using internal::FailedVote;
using internal::kMaxVoteBytes;
using internal::kNoSharedDirectory;
using internal::RandomNonce;
using internal::ShardToWrite;
using internal::SnapshotBuffer;
using internal::SyncAndClose;
using internal::VoteFile;
using nlohmann::json;

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

}  // namespace

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
  const Status captured = checkpoint_->Capture(rank);
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
    a.worker.Enqueue([this, ticket, own = std::move(own), rank, captured] {
      AsyncSave& a = *async_;
      Status s = captured;  // a serialize() that threw: this rank votes no
      if (s.ok()) s = env_->CreateDir(options_.directory);
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

void CheckpointManager::PrepareAsyncSave() {
  if (!async_ || save_in_flight()) return;
  ReserveSnapshot();
  async_->worker.WaitIdle();
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

}  // namespace holdfast
