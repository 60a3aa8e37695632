// What the checkpoint fuzzers and their seed generator share: the blobs a
// shard is decoded against, a valid shard and a valid manifest for them.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/internal/manifest.h"
#include "checkpoint/internal/shard_format.h"
#include "core/hash.h"

namespace holdfast::fuzz {

inline constexpr uint64_t kStep = 8;

// The model the fuzzed shards are decoded for: small, so a slice that fits it
// is never a large allocation.
inline const std::map<std::string, uint64_t>& ExpectedBlobs() {
  static const std::map<std::string, uint64_t> blobs = {
      {"params", 67}, {"optimizer/m", 67}, {"optimizer/v", 67}};
  return blobs;
}

// A valid shard of writer `rank` of `writers` for ExpectedBlobs().
inline std::string ValidShard(uint32_t rank, uint32_t writers) {
  static std::vector<float> values(67);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.25f * static_cast<float>(i) - 3.0f;
  static const std::map<std::string, int64_t> counters = {{"epoch", 2}, {"batch", 5}};
  static const std::map<std::string, double> scalars = {{"loss_sum", 0.1 + 0.2}};
  internal::ShardToWrite shard;
  shard.rank = rank;
  shard.world = writers;
  shard.step = kStep;
  for (const auto& [name, floats] : ExpectedBlobs()) {
    const uint64_t begin = floats * rank / writers, end = floats * (rank + 1) / writers;
    shard.slices.push_back(
        {name, floats, begin,
         std::as_bytes(std::span<const float>(values.data() + begin, end - begin))});
  }
  if (rank == 0) {
    shard.counters = &counters;
    shard.values = &scalars;
  }
  return internal::EncodeShard(shard);
}

inline std::string ShardName(uint32_t rank, uint32_t writers) {
  return "shard-" + std::to_string(rank) + "-of-" + std::to_string(writers) + ".bin";
}

// A valid manifest (checksum included) for `shards` (file name -> bytes).
inline std::string ValidManifest(const std::vector<std::pair<std::string, std::string>>& shards) {
  nlohmann::json m = {
      {"format", "holdfast-checkpoint"},
      {"format_version", internal::kShardFormatVersion},
      {"holdfast_version", "0.0.0-fuzz"},
      {"step", kStep},
      {"world_size", shards.size()},
      {"created_unix", 1700000000.5},
      {"created_utc", "2023-11-14T22:13:20Z"},
      {"model_signature", "fuzz-model"},
      {"optimizer_signature", "fuzz-optimizer"},
      {"counters", {{"epoch", 2}, {"batch", 5}}},
  };
  nlohmann::json list = nlohmann::json::array();
  for (size_t r = 0; r < shards.size(); ++r) {
    const std::string& bytes = shards[r].second;
    list.push_back({{"file", shards[r].first},
                    {"bytes", bytes.size()},
                    {"xxh3", HexU64(internal::ShardChecksum(bytes))},
                    {"rank", r}});
  }
  m["shards"] = list;
  nlohmann::json blobs = nlohmann::json::array();
  for (const auto& [name, floats] : ExpectedBlobs())
    blobs.push_back({{"name", name}, {"floats", floats}});
  m["blobs"] = blobs;
  m["checksum"] = internal::ManifestChecksum(m);
  return m.dump(2) + "\n";
}

}  // namespace holdfast::fuzz
