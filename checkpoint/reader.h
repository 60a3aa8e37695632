// ReadCheckpoint: reads one committed checkpoint directory and verifies all
// of it (manifest checksum, every shard's size and hash, slices covering each
// blob exactly) without needing the model it belongs to. Used by restore and
// by `holdfast ckpt inspect|verify`.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/env.h"
#include "checkpoint/names.h"
#include "checkpoint/object_info.h"
#include "core/status.h"

namespace holdfast {

// Where one slice of a blob lies in its shard file (manifest "slices").
struct SliceInfo {
  std::string blob;
  uint64_t offset = 0, count = 0;  // in 4-byte words of the blob
  uint64_t at = 0;                 // the file byte where its words start
  // Hex XXH3-64 of its bytes, for the small slices (the chief's and
  // per-rank blobs), which a restore checks before writing live state;
  // empty for the others.
  std::string xxh3;
};

struct ShardInfo {
  std::string file;
  uint64_t bytes = 0;
  std::string xxh3;  // hex: the shard's checksum (internal::ShardChecksum)
  int writer_rank = 0;
  std::vector<SliceInfo> slices;  // in file order; see CheckpointContents::has_layout
};

struct CheckpointContents {
  std::string name;  // "ckpt-1200"
  int64_t step = 0;
  uint32_t format_version = 0;
  int world_size = 0;
  double created_unix = 0;
  std::string created_utc;
  std::string holdfast_version;
  std::string model_signature, optimizer_signature;
  std::map<std::string, int64_t> counters;
  std::map<std::string, double> values;
  std::vector<ShardInfo> shards;
  // Whether the manifest records where every slice lies (checkpoints
  // written before it did have none): then ReadManifest has checked that
  // layout, and ranks can read their parts of the shards in parallel
  // (docs/parallel-restore.md).
  bool has_layout = false;
  // Blob names and sizes in 4-byte words ("floats": most blobs are float32
  // arrays), from the manifest, in its order.
  std::vector<std::pair<std::string, uint64_t>> blob_floats;
  // The tracked objects and the blobs that hold them. Checkpoints written
  // before objects were recorded get theirs from the blob names: "params"
  // is the model, "optimizer/*" the optimizer, any other a float32 array.
  std::vector<ObjectInfo> objects;
  // Whole blobs by name ("params", "optimizer/m", ...) as ReadCheckpoint
  // read them: every blob not given a destination.
  std::map<std::string, std::vector<float>> blobs;
  uint64_t bytes() const;
  // The object whose blobs include `blob`; null when none does.
  const ObjectInfo* ObjectOf(const std::string& blob) const;
};

// Where ReadCheckpoint copies blobs instead of allocating them: live state,
// by blob name.
using BlobDestinations = std::map<std::string, std::span<std::byte>>;

// What ReadCheckpoint does with each blob besides verifying it.
struct ReadTargets {
  // Copied into live state (each must be in the checkpoint, of its size,
  // else FailedPrecondition), and only once all is verified and
  // `before_live` accepted it.
  BlobDestinations live;
  // Verified, then neither copied nor kept (a partial restore's unused
  // objects, the optimizer's slots when only weights are wanted).
  std::set<std::string> skip;
  // Called with everything verified and the other blobs in c.blobs, before
  // `live` is written: an error from it is returned and `live` stays as it was.
  std::function<Status(const CheckpointContents&)> before_live;
};

// Reads `dir` (a "ckpt-<step>" directory). DataLoss for anything damaged or
// inconsistent, NotFound for missing files; nothing is allocated beyond what
// the shard files on disk can hold. Every blob is verified; those `targets`
// neither copies live nor skips are returned in c.blobs (without targets:
// all of them).
StatusOr<CheckpointContents> ReadCheckpoint(Env* env, const std::string& dir,
                                            const ReadTargets* targets = nullptr);

// Reads only the manifest (cheap; checks its checksum, not the shards).
StatusOr<CheckpointContents> ReadManifest(Env* env, const std::string& dir);
// The same from the manifest's text (as the chief sends it to every rank).
StatusOr<CheckpointContents> ParseManifest(const std::string& text, const std::string& dir);

// The fallback a restore makes: the committed checkpoints among `entries`
// (ListCheckpoints of `dir`) are given to `read` newest first, and the first
// it reads is returned. A FailedPrecondition from `read` (another model,
// another run) ends the search with that error; any other error is damage,
// noted on stderr ("holdfast: checkpoint P is damaged (why); falling back")
// and skipped. nullopt when `entries` holds no committed checkpoint;
// DataLoss "no usable checkpoint in DIR (name: why; ...)" when none reads.
StatusOr<std::optional<CheckpointContents>> ReadNewestValid(
    const std::vector<DirectoryEntry>& entries, const std::string& dir,
    const std::function<StatusOr<CheckpointContents>(const DirectoryEntry&)>& read);

}  // namespace holdfast
