// The reading half of a parallel restore (docs/parallel-restore.md): which
// bytes of a checkpoint each rank reads, and reading them: small slices
// first, checked by their own digests, then the rest straight into its
// destination, every checksum chunk hashed as its bytes arrive. No
// collectives here: restore.cc moves what these functions return between
// ranks. Only for checkpoints whose manifest records the layout
// (CheckpointContents::has_layout, which ReadManifest has checked).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/env.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/reader.h"
#include "core/status.h"

namespace holdfast::internal {

// Bytes [begin, end) of the shard c.shards[shard].
struct Extent {
  size_t shard = 0;
  uint64_t begin = 0, end = 0;
};
// Each rank's extents, by rank; the same on every rank. As many shards as
// ranks: rank r reads shard r. Otherwise the bytes of all shards, in order,
// are cut into `world` nearly equal runs at checksum-chunk boundaries (never
// inside a shard's prefix). `chief_reads_all`: rank 0 reads everything.
using Shares = std::vector<std::vector<Extent>>;
Shares ShareOut(const CheckpointContents& c, int world, bool chief_reads_all);

// The small blobs: those whose slices carry a digest of their own (the
// chief's and per-rank blobs), read and checked before anything else.
std::set<std::string> SmallBlobs(const CheckpointContents& c);

// The rank that reads a small slice (the one whose share holds its first
// byte); -1 for an empty slice.
int SmallSliceReader(const Shares& shares, size_t shard, const SliceInfo& slice);

// Each rank's part of blob `blob`'s bytes under `shares`: rank r read bytes
// [offsets[r], offsets[r + 1]) of it (size world + 1). A rank's part of a
// blob is contiguous and the parts are in rank order, so one all-gather
// assembles the blob on every rank.
std::vector<size_t> BlobParts(const CheckpointContents& c, const Shares& shares,
                              const std::string& blob);

// Whole blobs by name, as bytes: where their words go as they are read.
using BlobMemory = std::map<std::string, std::span<std::byte>>;

// Reads the small slices (those with a digest) that `share` reads into
// `staging`, which has room for every small blob, and checks each against
// its digest: DataLoss naming the file and blob for one that differs.
Status ReadSmallSlices(Env* env, const std::string& dir, const CheckpointContents& c,
                       std::span<const Extent> share, const BlobMemory& staging);

// What reading one rank's share found, for the verdict.
struct ShareRead {
  // Digests of the checksum chunks the share holds: shard, first chunk,
  // one digest per chunk in order.
  struct Chunks {
    size_t shard = 0;
    uint64_t first = 0;
    std::vector<uint64_t> digests;
  };
  std::vector<Chunks> chunks;
  // From the prefix of rank 0's shard, when this share read it.
  std::optional<std::map<std::string, double>> values;
  // The first way a shard's bytes differ from what the manifest implies
  // (a header, the prefix); "" if none.
  std::string damage;

  std::string Encode() const;
  static StatusOr<ShareRead> Decode(const std::string& bytes);
};

// How far a ReadShare running on another thread has come: for each blob
// read into live memory, how many bytes of this rank's part of it are in
// (a rank reads its part of a blob in increasing order, so a count says
// which). Lets the all-gather of what is in overlap the reading of the rest.
class ReadProgress {
 public:
  void Add(const std::string& blob, uint64_t bytes);
  // The read has ended, however it ended: nothing more will come.
  void Finish();
  // Blocks until `bytes` of this rank's part of `blob` are in, or the read
  // has ended.
  void WaitFor(const std::string& blob, uint64_t bytes);

 private:
  std::mutex mu_;
  std::condition_variable changed_;
  std::map<std::string, uint64_t> in_;
  bool finished_ = false;
};

// Reads the rest of `share`: each shard's prefix decoded and checked
// (magic, version, writer rank, step, slice count, counters), every other
// header compared with the one its slice implies (a difference is noted in
// ShareRead::damage, so that a damaged shard is named by its hash), the words of blobs in
// `live` written straight into it, the others read into scratch memory;
// small slices are not read again but hashed from `small` (where
// ReadSmallSlices and the all-gather after it put them). Every chunk is
// hashed as its bytes arrive, on another thread if asked (worth it when
// this rank has a core to spare). DataLoss or an I/O error for what it
// finds; the chunks' digests are checked by CheckChecksums. Each piece
// read into `live` is reported to `progress`, if given.
StatusOr<ShareRead> ReadShare(Env* env, const std::string& dir, const CheckpointContents& c,
                              std::span<const Extent> share, const BlobMemory& live,
                              const BlobMemory& small, bool hash_on_another_thread = false,
                              ReadProgress* progress = nullptr);

// Every shard's checksum formed from the chunk digests of all shares:
// DataLoss "<file>: hash mismatch" for the first that differs from the
// manifest's; then any damage a share noted.
Status CheckChecksums(const CheckpointContents& c, const std::vector<ShareRead>& reads);

}  // namespace holdfast::internal
