// What the `holdfast ckpt` subcommands (ckpt_command.cc: ls;
// ckpt_inspect.cc; ckpt_verify.cc) share: paths as users give them, what a
// path is, LATEST, sizes and times on disk.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "checkpoint/env.h"
#include "checkpoint/names.h"
#include "checkpoint/reader.h"

namespace holdfast::launcher {

using json = nlohmann::ordered_json;  // fields in the order written
using Entry = DirectoryEntry;

inline constexpr const char* kIncompleteNote = "(incomplete save, removed on next restore)";
inline constexpr const char* kUncommittedNote =
    "(not committed: no MANIFEST.json; restore skips it)";

// The subcommands; each returns its exit code.
int RunLs(const std::string& dir_arg, bool verify, bool as_json);
int RunInspect(const std::string& arg, bool as_json);
int RunVerify(const std::string& arg, bool as_json);
// `path`: `--npy` file to write, or empty to print; `list`: the paths instead.
int RunGet(const std::string& arg, const std::string& variable, const std::string& npy, bool list,
           bool as_json);

// The checkpoint a command's DIR[/ckpt-N] argument names: ckpt-N itself, or
// DIR's newest committed one, in *path. nullopt when found, else the exit
// code (the error printed).
std::optional<int> ResolveCheckpoint(const std::string& arg, std::string* path);

// "holdfast: <message>" on stderr.
void PrintError(const std::string& message);
double UnixNow();
std::string StripTrailingSlashes(std::string path);
std::string BaseName(const std::string& path);
// Damage messages from checkpoint/ name full paths; inside a row that already
// names the checkpoint, the part below it is enough.
std::string Shorten(std::string message, const std::string& checkpoint_path);

enum class PathKind { kMissing, kNotDirectory, kUnreadable, kCheckpoint, kCheckpointDir };
// Follows symbolic links: users pass them. A checkpoint is a directory with
// a manifest, or one named ckpt-<step> that holds no checkpoints itself (an
// uncommitted one).
PathKind Classify(const std::string& path, std::string* why);
// Prints the error for a path that cannot be used; returns its exit code.
int RejectPath(PathKind kind, const std::string& path, const std::string& why);
// The name LATEST holds, or "" if it is missing or unreadable.
std::string ReadLatest(Env* env, const std::string& dir);
// Bytes of the regular files below `path` (what the checkpoint costs on disk).
uint64_t DiskBytes(const std::string& path);
// Modification time of `path` in Unix seconds (0 if unknown).
double ModifiedUnix(const std::string& path);
// "epoch/batch" from BackupAndRestore's counters, "-" without them.
std::string EpochBatch(const std::map<std::string, int64_t>& counters);
// "committed", "uncommitted", "incomplete".
const char* KindName(Entry::Kind kind);
// A counter of a manifest as JSON, null when it has none.
json Counter(const CheckpointContents* m, const char* key);

}  // namespace holdfast::launcher
