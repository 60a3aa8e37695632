#include "checkpoint/names.h"

#include <algorithm>
#include <regex>
#include <tuple>

namespace holdfast {
namespace {

bool MatchStep(const std::string& name, const std::regex& pattern, int64_t* step) {
  std::smatch m;
  if (!std::regex_match(name, m, pattern)) return false;
  if (step != nullptr) *step = std::stoll(m[1]);
  return true;
}

}  // namespace

std::string CheckpointName(int64_t step) { return "ckpt-" + std::to_string(step); }

std::string ShardFileName(int writer, int writers) {
  return "shard-" + std::to_string(writer) + "-of-" + std::to_string(writers) + ".bin";
}

std::string PrepareAreaName(int64_t step, const std::string& nonce) {
  // (append, not "." + ...: GCC 12 warns falsely on the latter, bug 105651)
  return std::string(".").append(CheckpointName(step)).append(".tmp-").append(nonce);
}

bool ParseCheckpointName(const std::string& name, int64_t* step) {
  static const std::regex kCheckpointName("ckpt-([0-9]{1,18})");
  return MatchStep(name, kCheckpointName, step);
}

bool ParsePrepareAreaName(const std::string& name, int64_t* step) {
  static const std::regex kPrepareName("\\.ckpt-([0-9]{1,18})\\.tmp-[0-9a-f]+");
  return MatchStep(name, kPrepareName, step);
}

bool IsShardFileName(const std::string& name) {
  static const std::regex kShardName("shard-[0-9]{1,9}-of-[0-9]{1,9}\\.bin");
  return std::regex_match(name, kShardName);
}

StatusOr<std::vector<DirectoryEntry>> ListCheckpoints(Env* env, const std::string& dir) {
  HOLDFAST_ASSIGN_OR_RETURN(std::vector<std::string> names, env->ListDir(dir));
  std::vector<DirectoryEntry> entries;
  for (const std::string& name : names) {
    int64_t step = 0;
    const std::string path = JoinPath(dir, name);
    if (ParseCheckpointName(name, &step)) {
      const bool committed = env->Exists(JoinPath(path, kManifestFile));
      entries.push_back({committed ? DirectoryEntry::kCommitted : DirectoryEntry::kUncommitted,
                         step, name, path});
    } else if (ParsePrepareAreaName(name, &step)) {
      entries.push_back({DirectoryEntry::kPrepareArea, step, name, path});
    }
  }
  std::sort(entries.begin(), entries.end(), [](const DirectoryEntry& a, const DirectoryEntry& b) {
    return std::tie(a.step, a.kind, a.name) < std::tie(b.step, b.kind, b.name);
  });
  return entries;
}

}  // namespace holdfast
