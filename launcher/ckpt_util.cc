#include "launcher/ckpt_util.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "checkpoint/env.h"
#include "checkpoint/names.h"
#include "core/exit_codes.h"

namespace holdfast::launcher {

namespace fs = std::filesystem;

constexpr uint64_t kMaxLatestBytes = 4096;

void PrintError(const std::string& message) {
  std::fprintf(stderr, "holdfast: %s\n", message.c_str());
}

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string StripTrailingSlashes(std::string path) {
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  return path;
}

std::string BaseName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string Shorten(std::string message, const std::string& checkpoint_path) {
  const std::string prefix = checkpoint_path + ": ";
  if (message.rfind(prefix, 0) == 0) message.erase(0, prefix.size());
  const std::string inside = checkpoint_path + "/";
  for (size_t at; (at = message.find(inside)) != std::string::npos;)
    message.erase(at, inside.size());
  return message;
}

namespace {

bool HasCheckpointChildren(const std::string& dir) {
  const auto entries = ListCheckpoints(Env::Default(), dir);
  return entries.ok() && !entries->empty();
}

// Follows symbolic links: users pass them. A checkpoint is a directory with
// a manifest, or one named ckpt-<step> that holds no checkpoints itself (an
// uncommitted one).
}  // namespace

PathKind Classify(const std::string& path, std::string* why) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (st.type() == fs::file_type::not_found) return PathKind::kMissing;
  if (ec) {
    *why = ec.message();
    return PathKind::kUnreadable;
  }
  if (!fs::is_directory(st)) return PathKind::kNotDirectory;
  if (fs::exists(fs::path(path) / kManifestFile, ec)) return PathKind::kCheckpoint;
  if (ParseCheckpointName(BaseName(path)) && !fs::exists(fs::path(path) / kLatestFile, ec) &&
      !HasCheckpointChildren(path)) {
    return PathKind::kCheckpoint;
  }
  return PathKind::kCheckpointDir;
}

std::optional<int> ResolveCheckpoint(const std::string& arg, std::string* path) {
  *path = StripTrailingSlashes(arg);
  std::string why;
  const PathKind kind = Classify(*path, &why);
  if (kind != PathKind::kCheckpoint && kind != PathKind::kCheckpointDir) {
    return RejectPath(kind, *path, why);
  }
  if (kind == PathKind::kCheckpoint) return std::nullopt;
  auto entries = ListCheckpoints(Env::Default(), *path);
  if (!entries.ok()) {
    PrintError("cannot list " + *path + ": " + entries.status().message());
    return kExitFailure;
  }
  const auto newest = std::find_if(entries->rbegin(), entries->rend(),
                                   [](const Entry& e) { return e.kind == Entry::kCommitted; });
  if (newest == entries->rend()) {
    PrintError("no committed checkpoint in " + *path);
    return kExitUsage;
  }
  *path = newest->path;
  return std::nullopt;
}

int RejectPath(PathKind kind, const std::string& path, const std::string& why) {
  switch (kind) {
    case PathKind::kMissing:
      PrintError(path + ": no such directory");
      return kExitUsage;
    case PathKind::kNotDirectory:
      PrintError(path + " is not a directory");
      return kExitUsage;
    case PathKind::kUnreadable:
      PrintError("cannot read " + path + ": " + why);
      return kExitFailure;
    default:
      return kExitOk;
  }
}

std::string ReadLatest(Env* env, const std::string& dir) {
  auto text = env->ReadFile(JoinPath(dir, kLatestFile), kMaxLatestBytes);
  if (!text.ok()) return "";
  std::string name = *text;
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  name.erase(std::find_if(name.rbegin(), name.rend(), not_space).base(), name.end());
  name.erase(name.begin(), std::find_if(name.begin(), name.end(), not_space));
  return name;
}

uint64_t DiskBytes(const std::string& path) {
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(path, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    std::error_code size_ec;
    if (it->is_regular_file(size_ec)) {
      const uintmax_t size = it->file_size(size_ec);
      if (!size_ec) total += size;
    }
  }
  return total;
}

double ModifiedUnix(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<double>(st.st_mtim.tv_sec) + st.st_mtim.tv_nsec * 1e-9;
}

std::string EpochBatch(const std::map<std::string, int64_t>& counters) {
  const auto epoch = counters.find("holdfast/epoch");
  const auto batch = counters.find("holdfast/batch");
  if (epoch == counters.end() && batch == counters.end()) return "-";
  return (epoch == counters.end() ? "-" : std::to_string(epoch->second)) + "/" +
         (batch == counters.end() ? "-" : std::to_string(batch->second));
}

const char* KindName(Entry::Kind kind) {
  switch (kind) {
    case Entry::kCommitted:
      return "committed";
    case Entry::kUncommitted:
      return "uncommitted";
    default:
      return "incomplete";
  }
}

json Counter(const CheckpointContents* m, const char* key) {
  if (m == nullptr) return nullptr;
  const auto it = m->counters.find(key);
  return it == m->counters.end() ? json(nullptr) : json(it->second);
}

}  // namespace holdfast::launcher
