// The shard file: a fixed header, then a Boost.Serialization binary archive
// (class-versioned) holding slices of the flat blobs as raw float arrays and,
// in the chief's shard, the checkpoint's counters and values.
//
//   offset  size  field
//   0       8     magic "HFSHARD1"
//   8       4     format version (1)
//   12      4     writer rank
//   16      4     world size at save
//   20      4     reserved (0)
//   24      8     step
//   32      8     payload bytes (the archive that follows)
//
// Integers are little-endian (the machines holdfast runs on). The whole
// file's XXH3-64 is recorded in the manifest and checked before decoding.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace holdfast::internal {

inline constexpr uint32_t kShardFormatVersion = 1;
inline constexpr size_t kShardHeaderBytes = 40;

// What one writer puts in its shard.
struct ShardToWrite {
  uint32_t rank = 0, world = 1;
  uint64_t step = 0;
  struct Slice {
    std::string name;
    uint64_t total = 0;   // floats in the whole blob
    uint64_t offset = 0;  // first float of this slice
    std::span<const float> data;
  };
  std::vector<Slice> slices;
  const std::map<std::string, int64_t>* counters = nullptr;  // chief only
  const std::map<std::string, double>* values = nullptr;
};

std::string EncodeShard(const ShardToWrite& shard);

struct DecodedShard {
  uint32_t rank = 0, world = 1;
  uint64_t step = 0;
  struct Slice {
    std::string name;
    uint64_t total = 0, offset = 0;
    std::vector<float> data;
  };
  std::vector<Slice> slices;
  std::map<std::string, int64_t> counters;
  std::map<std::string, double> values;
};

// Decodes a shard whose hash was already checked. `blob_sizes` (name ->
// floats) is what the current model expects: a slice of an unknown blob, of
// another size, or outside it is DataLoss, found before anything is
// allocated for it. Malformed archives are DataLoss too, never an exception.
StatusOr<DecodedShard> DecodeShard(std::string_view bytes,
                                   const std::map<std::string, uint64_t>& blob_sizes);

}  // namespace holdfast::internal
