// The names in a checkpoint directory, made and parsed in one place, and the
// one scan of a directory that every reader uses (LevelDB's db/filename.h).
//
//   LATEST                               name of the newest committed checkpoint (a hint)
//   ckpt-<step>/                         a checkpoint; committed iff it holds a MANIFEST.json
//   ckpt-<step>/MANIFEST.json            written last
//   ckpt-<step>/shard-<r>-of-<W>.bin     writer r's slice of every blob
//   .ckpt-<step>.tmp-<nonce>/            a save's prepare area, never read
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/env.h"
#include "core/status.h"

namespace holdfast {

inline constexpr const char* kManifestFile = "MANIFEST.json";
inline constexpr const char* kLatestFile = "LATEST";

// "ckpt-<step>".
std::string CheckpointName(int64_t step);
// "shard-<writer>-of-<writers>.bin".
std::string ShardFileName(int writer, int writers);
// ".ckpt-<step>.tmp-<nonce>"; nonce: lower-case hex digits.
std::string PrepareAreaName(int64_t step, const std::string& nonce);

// "ckpt-<step>": true and the step, for a (committed or not) checkpoint name.
bool ParseCheckpointName(const std::string& name, int64_t* step = nullptr);
// ".ckpt-<step>.tmp-<nonce>": a save's prepare area.
bool ParsePrepareAreaName(const std::string& name, int64_t* step = nullptr);
// "shard-<r>-of-<W>.bin".
bool IsShardFileName(const std::string& name);

struct DirectoryEntry {
  // Within a step, in this order.
  enum Kind { kCommitted, kUncommitted, kPrepareArea };
  Kind kind;
  int64_t step = 0;
  std::string name;  // "ckpt-1200"
  std::string path;  // <dir>/ckpt-1200
};

// The checkpoints and prepare areas in `dir`, oldest first (within a step:
// committed, uncommitted, prepare areas); other names are ignored.
// "Committed" means that a MANIFEST.json exists: whether it verifies is for
// ReadManifest and ReadCheckpoint (checkpoint/reader.h) to say. Errors: those
// of Env::ListDir (NotFound for a missing directory).
StatusOr<std::vector<DirectoryEntry>> ListCheckpoints(Env* env, const std::string& dir);

}  // namespace holdfast
