// The shard file: a fixed header, then a Boost.Serialization binary archive
// (class-versioned) holding slices of the flat blobs as raw float arrays and,
// in the chief's shard, the checkpoint's counters and values.
//
//   offset  size  field
//   0       8     magic "HFSHARD1"
//   8       4     format version (kShardFormatVersion: 2; 1 is still read)
//   12      4     writer rank
//   16      4     world size at save
//   20      4     reserved (0)
//   24      8     step
//   32      8     payload bytes (the archive that follows)
//
// Integers are little-endian (the machines holdfast runs on). The file's
// checksum (ShardChecksum) is recorded in the manifest and checked before
// decoding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/env.h"
#include "core/status.h"

namespace holdfast::internal {

// Version 2 changed only the checksum; version 1 files are still read.
inline constexpr uint32_t kShardFormatVersion = 2;
inline constexpr uint32_t kOldestShardFormatVersion = 1;
inline constexpr size_t kShardHeaderBytes = 40;

// A version-2 shard's checksum is the XXH3-64 of the XXH3-64 digests
// (little-endian) of the file's consecutive chunks of this many bytes, the
// last one possibly shorter; version 1 used the XXH3-64 of the whole file.
// Chunks are independent: an asynchronous save hashes those inside its
// slices on the threads that copy them, while they are in the cache, and a
// reader hashes them in parallel.
inline constexpr size_t kChecksumChunkBytes = size_t{64} << 10;
uint64_t ShardChecksum(std::string_view file, uint32_t format_version = kShardFormatVersion);

// What one writer puts in its shard.
struct ShardToWrite {
  uint32_t rank = 0, world = 1;
  uint64_t step = 0;
  struct Slice {
    std::string name;
    uint64_t total = 0;   // floats in the whole blob
    uint64_t offset = 0;  // first float of this slice
    // The slice's floats as bytes: a snapshot may hold them at any address
    // (see SliceFileOffsets).
    std::span<const std::byte> data;
    // Optional: the digests of the checksum chunks that lie wholly inside
    // this slice's bytes in the file, in order, from the first chunk that
    // starts at or after its offset (SliceFileOffsets). Without them
    // WriteShard hashes those chunks itself.
    std::span<const uint64_t> chunk_digests;
  };
  std::vector<Slice> slices;
  const std::map<std::string, int64_t>* counters = nullptr;  // chief only
  const std::map<std::string, double>* values = nullptr;
};

struct WrittenShard {
  uint64_t bytes = 0;     // the whole file
  uint64_t checksum = 0;  // ShardChecksum of the whole file
  // Where each slice's words start in the file, in slice order (recorded
  // in the manifest, so that readers can split a shard among themselves).
  std::vector<uint64_t> slice_offsets;
};

// Encodes `shard` straight into `file` (Append only; the caller syncs and
// closes): the slices go from their spans to the file in large pieces,
// hashed on the way, so no shard-sized buffer is ever built and every byte
// is touched once by holdfast (the hash) and once by the kernel (the copy
// into the page cache, or none for a direct file given well-placed memory).
// The payload length in the header is found by a first pass that only
// counts. The first failed Append is returned; the file is then incomplete.
StatusOr<WrittenShard> WriteShard(const ShardToWrite& shard, WritableFile& file);

// Where WriteShard puts each slice's first byte, counted from the start of
// the file, in slice order. The layout depends only on the names, counts
// and the keys of the counters and values, never on the data: a writer can
// place its snapshot of a slice at the same offset within a page as the
// file will hold it (see Env::NewDirectWritableFile).
std::vector<uint64_t> SliceFileOffsets(const ShardToWrite& shard);

// The bytes WriteShard puts right before a slice's words: its name, total,
// offset and count. The bytes between two slices of a shard are exactly the
// second one's header, so a reader that knows the layout (the manifest's)
// compares what it reads with these.
std::string SliceHeaderBytes(const std::string& name, uint64_t total, uint64_t offset,
                             uint64_t count);

// The start of a shard, up to its first slice's header: the fixed header
// and the archived rank, world, step, counters, values and slice count.
struct ShardPrefix {
  uint32_t rank = 0, world = 1;
  uint64_t step = 0;
  uint64_t slice_count = 0;
  std::map<std::string, int64_t> counters;
  std::map<std::string, double> values;
};
// Decodes `prefix`, a shard's first bytes, which must end exactly where the
// first slice's header begins (or at the end of a shard without slices);
// `file_bytes` is the whole file's size, checked against the header's
// payload length. DataLoss for anything malformed.
StatusOr<ShardPrefix> DecodeShardPrefix(std::string_view prefix, uint64_t file_bytes);

// The same bytes in memory, for tests and fuzzers.
std::string EncodeShard(const ShardToWrite& shard);

struct DecodedShard {
  uint32_t rank = 0, world = 1;
  uint64_t step = 0;
  struct Slice {
    std::string name;
    uint64_t total = 0, offset = 0, count = 0;  // in floats
  };
  std::vector<Slice> slices;
  std::map<std::string, int64_t> counters;
  std::map<std::string, double> values;
};

// Where a slice's words are copied: called once the slice is known to fit
// its blob and the file; returns room for `count` 4-byte words, or null to
// skip them.
using SliceDestination =
    std::function<std::byte*(const std::string& name, uint64_t offset, uint64_t count)>;

// Decodes a shard whose hash was already checked. `blob_sizes` (name ->
// floats) is what the current model expects: a slice of an unknown blob, of
// another size, outside it or longer than the bytes left in the file is
// DataLoss, found before anything is allocated or copied for it. Malformed
// archives are DataLoss too, never an exception. Without `into` only the
// layout is decoded (the floats are skipped), which lets a reader check a
// whole checkpoint before it writes into live state.
StatusOr<DecodedShard> DecodeShard(std::string_view bytes,
                                   const std::map<std::string, uint64_t>& blob_sizes,
                                   const SliceDestination& into = nullptr);

}  // namespace holdfast::internal
