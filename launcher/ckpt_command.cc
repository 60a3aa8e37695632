#include "launcher/ckpt_command.h"

#include <sys/stat.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/env.h"
#include "checkpoint/reader.h"
#include "core/parameter_store.h"
#include "core/sequential.h"

namespace holdfast::launcher {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // fields in the order written

constexpr uint64_t kMaxLatestBytes = 4096;

constexpr const char* kIncompleteNote = "(incomplete save, removed on next restore)";
constexpr const char* kUncommittedNote = "(not committed: no MANIFEST.json; restore skips it)";

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

// Damage messages from checkpoint/ name full paths; inside a row that already
// names the checkpoint, the part below it is enough.
std::string Shorten(std::string message, const std::string& checkpoint_path) {
  const std::string prefix = checkpoint_path + ": ";
  if (message.rfind(prefix, 0) == 0) message.erase(0, prefix.size());
  const std::string inside = checkpoint_path + "/";
  for (size_t at; (at = message.find(inside)) != std::string::npos;)
    message.erase(at, inside.size());
  return message;
}

// ---------------------------------------------------------------------------
// What is in a checkpoint directory.

using Entry = DirectoryEntry;

bool HasCheckpointChildren(const std::string& dir) {
  std::error_code ec;
  for (const auto& child : fs::directory_iterator(dir, ec)) {
    const std::string name = child.path().filename().string();
    if (ParseCheckpointName(name) || ParsePrepareAreaName(name)) {
      return true;
    }
  }
  return false;
}

enum class PathKind { kMissing, kNotDirectory, kUnreadable, kCheckpoint, kCheckpointDir };

// Follows symbolic links: users pass them. A checkpoint is a directory with
// a manifest, or one named ckpt-<step> that holds no checkpoints itself (an
// uncommitted one).
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

// Prints the error for a path that cannot be used; returns its exit code.
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

// The name LATEST holds, or "" if it is missing or unreadable.
std::string ReadLatest(Env* env, const std::string& dir) {
  auto text = env->ReadFile(JoinPath(dir, kLatestFile), kMaxLatestBytes);
  if (!text.ok()) return "";
  std::string name = *text;
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  name.erase(std::find_if(name.rbegin(), name.rend(), not_space).base(), name.end());
  name.erase(name.begin(), std::find_if(name.begin(), name.end(), not_space));
  return name;
}

// Bytes of the regular files below `path` (what the checkpoint costs on disk).
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

// Modification time of `path` in Unix seconds (0 if unknown).
double ModifiedUnix(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return 0;
  return static_cast<double>(st.st_mtim.tv_sec) + st.st_mtim.tv_nsec * 1e-9;
}

// ---------------------------------------------------------------------------
// Formatting.

// Columns separated by two spaces; the last column is free text.
class Table {
 public:
  Table(std::vector<std::string> header, std::vector<bool> right_aligned)
      : right_aligned_(std::move(right_aligned)) {
    rows_.push_back(std::move(header));
  }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }

  std::string Render(const std::string& indent = "") const {
    std::vector<size_t> width(rows_[0].size(), 0);
    for (const auto& row : rows_) {
      for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
    }
    std::string out;
    for (const auto& row : rows_) {
      std::string line = indent;
      for (size_t i = 0; i < row.size(); ++i) {
        const bool last = i + 1 == row.size();
        const std::string pad(width[i] - row[i].size(), ' ');
        if (i > 0) line += "  ";
        if (right_aligned_[i]) {
          line += pad + row[i];
        } else {
          line += row[i];
          if (!last) line += pad;
        }
      }
      line.erase(line.find_last_not_of(' ') + 1);
      out += line + "\n";
    }
    return out;
  }

 private:
  std::vector<bool> right_aligned_;
  std::vector<std::vector<std::string>> rows_;
};

std::string FormatG(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

// The shortest text that reads back as exactly `v`.
std::string FormatExact(double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : FormatG(v);
}

std::string EpochBatch(const std::map<std::string, int64_t>& counters) {
  const auto epoch = counters.find("holdfast/epoch");
  const auto batch = counters.find("holdfast/batch");
  if (epoch == counters.end() && batch == counters.end()) return "-";
  return (epoch == counters.end() ? "-" : std::to_string(epoch->second)) + "/" +
         (batch == counters.end() ? "-" : std::to_string(batch->second));
}

// ---------------------------------------------------------------------------
// Blob statistics and the params layout.

struct Stats {
  uint64_t count = 0, finite = 0, nan = 0, inf = 0;
  double min = std::numeric_limits<double>::infinity();
  double max = -std::numeric_limits<double>::infinity();
  double sum = 0, sum_squares = 0;

  void Add(std::span<const float> values) {
    count += values.size();
    for (const float f : values) {
      if (std::isnan(f)) {
        ++nan;
      } else if (std::isinf(f)) {
        ++inf;
      } else {
        const double v = f;
        ++finite;
        min = std::min(min, v);
        max = std::max(max, v);
        sum += v;
        sum_squares += v * v;
      }
    }
  }
  double mean() const { return sum / static_cast<double>(finite); }
  double rms() const { return std::sqrt(sum_squares / static_cast<double>(finite)); }

  // MIN MAX MEAN RMS NAN INF
  std::vector<std::string> Cells() const {
    if (finite == 0) return {"-", "-", "-", "-", std::to_string(nan), std::to_string(inf)};
    return {FormatG(min),   FormatG(max),        FormatG(mean()),
            FormatG(rms()), std::to_string(nan), std::to_string(inf)};
  }
  void ToJson(json& j) const {
    const bool any = finite > 0;
    j["min"] = any ? json(min) : json(nullptr);
    j["max"] = any ? json(max) : json(nullptr);
    j["mean"] = any ? json(mean()) : json(nullptr);
    j["rms"] = any ? json(rms()) : json(nullptr);
    j["finite"] = finite;
    j["nan"] = nan;
    j["inf"] = inf;
  }
};

// The params blob's tensors, from the model signature (core's parser, the
// inverse of Sequential::Signature). Empty when the signature does not
// parse or does not add up to `floats`: it is only a hint.
std::vector<TensorSpec> ParamsLayout(const std::string& signature, uint64_t floats) {
  size_t total = 0;
  std::optional<std::vector<TensorSpec>> tensors = TensorsOfSignature(signature, floats, &total);
  if (!tensors || tensors->empty() || total != floats) return {};
  return *tensors;
}

// Statistics of a blob: over the tensors when the layout is known (so the
// alignment padding is left out), else over every float.
Stats BlobStats(const std::vector<float>& blob, const std::vector<TensorSpec>& layout) {
  Stats s;
  if (layout.empty()) {
    s.Add(blob);
    return s;
  }
  for (const TensorSpec& t : layout) s.Add(std::span<const float>(blob).subspan(t.offset, t.size));
  return s;
}

// ---------------------------------------------------------------------------
// ls

struct Row {
  Entry entry;
  std::optional<CheckpointContents> manifest;
  Status damage;  // OK: no damage found
};

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

// A counter of a manifest as JSON, null when it has none.
json Counter(const CheckpointContents* m, const char* key) {
  if (m == nullptr) return nullptr;
  const auto it = m->counters.find(key);
  return it == m->counters.end() ? json(nullptr) : json(it->second);
}

int RunLs(const std::string& dir_arg, bool verify, bool as_json) {
  const std::string dir = StripTrailingSlashes(dir_arg);
  std::string why;
  const PathKind kind = Classify(dir, &why);
  if (kind == PathKind::kCheckpoint) {
    PrintError(dir + " is one checkpoint, not a checkpoint directory (see `holdfast ckpt inspect " +
               dir + "`)");
    return kExitUsage;
  }
  if (kind != PathKind::kCheckpointDir) return RejectPath(kind, dir, why);
  Env* env = Env::Default();
  auto entries = ListCheckpoints(env, dir);
  if (!entries.ok()) {
    PrintError("cannot list " + dir + ": " + entries.status().message());
    return kExitFailure;
  }
  if (entries->empty() && !as_json) {
    std::printf("no checkpoints in %s\n", dir.c_str());
    return kExitOk;
  }

  std::vector<Row> rows;
  for (const Entry& e : *entries) rows.push_back({e, std::nullopt, Status::Ok()});
  // Newest first, as restore looks at them.
  const Row* restore = nullptr;
  for (auto it = rows.rbegin(); it != rows.rend(); ++it) {
    Row& row = *it;
    if (row.entry.kind != Entry::kCommitted) continue;
    auto manifest = ReadManifest(env, row.entry.path);
    if (!manifest.ok()) {
      row.damage = manifest.status();
      continue;
    }
    row.manifest = std::move(*manifest);
    if (verify) {
      // Holds one checkpoint in memory at a time.
      const auto full = ReadCheckpoint(env, row.entry.path);
      if (!full.ok()) row.damage = full.status();
    }
    if (restore == nullptr && row.damage.ok()) restore = &row;
  }

  const std::string latest = ReadLatest(env, dir);
  bool latest_found = latest.empty();
  const double now = UnixNow();
  Table table({"NAME", "STEP", "EPOCH/BATCH", "WORLD", "SIZE", "AGE", ""},
              {false, true, false, true, true, false, false});
  json checkpoints = json::array();
  for (const Row& row : rows) {
    const Entry& e = row.entry;
    const CheckpointContents* m = row.manifest ? &*row.manifest : nullptr;
    std::vector<std::string> marks;
    if (e.kind == Entry::kCommitted && e.name == latest) {
      marks.push_back("LATEST");
      latest_found = true;
    }
    if (&row == restore) marks.push_back("restore");
    if (!row.damage.ok()) marks.push_back("DAMAGED: " + Shorten(row.damage.message(), e.path));
    if (e.kind == Entry::kPrepareArea) marks.push_back(kIncompleteNote);
    if (e.kind == Entry::kUncommitted) marks.push_back(kUncommittedNote);
    std::string note;
    for (const std::string& mark : marks) note += (note.empty() ? "" : ", ") + mark;
    const uint64_t bytes = DiskBytes(e.path);
    const double created = m ? m->created_unix : ModifiedUnix(e.path);
    table.Add({e.name, std::to_string(m ? m->step : e.step), m ? EpochBatch(m->counters) : "-",
               m ? std::to_string(m->world_size) : "-", HumanBytes(bytes), HumanAge(now - created),
               note});
    checkpoints.push_back(
        {{"name", e.name},
         {"path", e.path},
         {"state", KindName(e.kind)},
         {"step", m ? m->step : e.step},
         {"epoch", Counter(m, "holdfast/epoch")},
         {"batch", Counter(m, "holdfast/batch")},
         {"world_size", m ? json(m->world_size) : json(nullptr)},
         {"bytes_on_disk", bytes},
         {"created_unix", created},
         {"age_seconds", now - created},
         {"latest", e.kind == Entry::kCommitted && e.name == latest},
         {"restore", &row == restore},
         {"ok", e.kind == Entry::kCommitted && row.damage.ok()},
         {"damage",
          row.damage.ok() ? json(nullptr) : json(Shorten(row.damage.message(), e.path))}});
  }
  if (as_json) {
    const json j = {{"directory", dir},
                    {"latest", latest.empty() ? json(nullptr) : json(latest)},
                    {"latest_is_committed", !latest.empty() && latest_found},
                    {"restore", restore ? json(restore->entry.name) : json(nullptr)},
                    {"shards_verified", verify},
                    {"checkpoints", checkpoints}};
    std::printf("%s\n", j.dump(2).c_str());
    return kExitOk;
  }
  std::fputs(table.Render().c_str(), stdout);
  if (!latest_found) {
    std::printf("note: LATEST names %s, which is not a committed checkpoint here\n",
                latest.c_str());
  }
  if (restore == nullptr) {
    std::printf("note: no checkpoint here is usable; restore would fail\n");
  }
  if (!verify) {
    std::printf("note: shards not verified (--no-verify); `holdfast ckpt verify %s` checks them\n",
                dir.c_str());
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------
// inspect

json InspectJson(const std::string& path, const CheckpointContents& c, const Status& damage,
                 double now) {
  json j;
  j["path"] = path;
  j["name"] = c.name;
  j["ok"] = damage.ok();
  j["damage"] = damage.ok() ? json(nullptr) : json(damage.message());
  j["step"] = c.step;
  j["world_size"] = c.world_size;
  j["created_unix"] = c.created_unix;
  j["created_utc"] = c.created_utc;
  j["age_seconds"] = now - c.created_unix;
  j["holdfast_version"] = c.holdfast_version;
  j["model_signature"] = c.model_signature;
  j["optimizer_signature"] = c.optimizer_signature;
  j["counters"] = c.counters;
  // Doubles as JSON numbers; a NaN or infinity, which JSON cannot hold, as text.
  json values = json::object();
  for (const auto& [key, v] : c.values) values[key] = std::isfinite(v) ? json(v) : json(FormatG(v));
  j["values"] = values;
  j["bytes"] = c.bytes();
  json shards = json::array();
  for (const ShardInfo& s : c.shards) {
    shards.push_back(
        {{"file", s.file}, {"rank", s.writer_rank}, {"bytes", s.bytes}, {"xxh3", s.xxh3}});
  }
  j["shards"] = shards;
  uint64_t params_floats = 0;
  for (const auto& [name, floats] : c.blob_floats) {
    if (name == "params") params_floats = floats;
  }
  const std::vector<TensorSpec> layout = ParamsLayout(c.model_signature, params_floats);
  json blobs = json::array();
  for (const auto& [name, floats] : c.blob_floats) {
    json b = {{"name", name}, {"floats", floats}};
    const auto blob = c.blobs.find(name);
    const bool shared_layout = !layout.empty() && floats == params_floats;
    if (blob != c.blobs.end()) {
      BlobStats(blob->second, shared_layout ? layout : std::vector<TensorSpec>{}).ToJson(b);
    }
    if (name == "params" && shared_layout) {
      json tensors = json::array();
      for (const TensorSpec& t : layout) {
        json jt = {{"name", t.name}, {"shape", t.shape}, {"offset", t.offset}, {"floats", t.size}};
        if (blob != c.blobs.end()) BlobStats(blob->second, {t}).ToJson(jt);
        tensors.push_back(jt);
      }
      b["tensors"] = tensors;
    }
    blobs.push_back(b);
  }
  j["blobs"] = blobs;
  return j;
}

void PrintInspect(const std::string& path, const CheckpointContents& c, const Status& damage,
                  double now) {
  Table fields({"", ""}, {false, false});
  fields.Add({"checkpoint", path});
  fields.Add({"status", damage.ok() ? "ok (manifest and every shard verified)"
                                    : "DAMAGED: " + Shorten(damage.message(), path)});
  fields.Add({"step", std::to_string(c.step)});
  fields.Add({"world size", std::to_string(c.world_size)});
  fields.Add({"created", c.created_utc + " (" + HumanAge(now - c.created_unix) + ")"});
  fields.Add({"holdfast", c.holdfast_version});
  fields.Add({"model", c.model_signature});
  fields.Add({"optimizer", c.optimizer_signature});
  fields.Add({"size", HumanBytes(c.bytes()) + " in " + std::to_string(c.shards.size()) +
                          (c.shards.size() == 1 ? " shard (" : " shards (") +
                          std::to_string(c.bytes()) + " bytes); " + HumanBytes(DiskBytes(path)) +
                          " on disk"});
  bool first = true;
  for (const auto& [key, v] : c.counters) {
    fields.Add({first ? "counters" : "", key + " = " + std::to_string(v)});
    first = false;
  }
  if (c.counters.empty()) fields.Add({"counters", "-"});
  if (damage.ok()) {  // values live in rank 0's shard: known only once it verified
    first = true;
    for (const auto& [key, v] : c.values) {
      fields.Add({first ? "values" : "", key + " = " + FormatExact(v)});
      first = false;
    }
    if (c.values.empty()) fields.Add({"values", "-"});
  }
  // The header row of `fields` is empty: skip it.
  const std::string rendered = fields.Render();
  std::fputs(rendered.c_str() + rendered.find('\n') + 1, stdout);

  std::printf("\nshards\n");
  Table shards({"FILE", "RANK", "SIZE", "BYTES", "CHECKSUM"}, {false, true, true, true, false});
  for (const ShardInfo& s : c.shards) {
    shards.Add({s.file, std::to_string(s.writer_rank), HumanBytes(s.bytes), std::to_string(s.bytes),
                s.xxh3});
  }
  std::fputs(shards.Render("  ").c_str(), stdout);

  std::printf("\nblobs%s\n", damage.ok() ? "" : " (no statistics: the checkpoint is damaged)");
  uint64_t params_floats = 0;
  for (const auto& [name, floats] : c.blob_floats) {
    if (name == "params") params_floats = floats;
  }
  const std::vector<TensorSpec> layout = ParamsLayout(c.model_signature, params_floats);
  Table blobs({"NAME", "FLOATS", "SHAPE", "MIN", "MAX", "MEAN", "RMS", "NAN", "INF"},
              {false, true, false, true, true, true, true, true, true});
  for (const auto& [name, floats] : c.blob_floats) {
    const auto blob = c.blobs.find(name);
    const bool shared_layout = !layout.empty() && floats == params_floats;
    std::vector<std::string> row = {name, std::to_string(floats), "-"};
    if (blob != c.blobs.end()) {
      for (std::string& cell :
           BlobStats(blob->second, shared_layout ? layout : std::vector<TensorSpec>{}).Cells()) {
        row.push_back(std::move(cell));
      }
    }
    blobs.Add(row);
    if (name != "params" || !shared_layout) continue;
    for (const TensorSpec& t : layout) {
      std::vector<std::string> trow = {"  " + t.name, std::to_string(t.size),
                                       DescribeShape(t.shape)};
      if (blob != c.blobs.end()) {
        for (std::string& cell : BlobStats(blob->second, {t}).Cells()) trow.push_back(cell);
      }
      blobs.Add(trow);
    }
  }
  std::fputs(blobs.Render("  ").c_str(), stdout);
  if (!layout.empty()) {
    std::printf(
        "  (shapes from the model signature; statistics skip alignment padding and "
        "NaN/Inf)\n");
  }
}

int RunInspect(const std::string& arg, bool as_json) {
  std::string path = StripTrailingSlashes(arg);
  std::string why;
  const PathKind kind = Classify(path, &why);
  if (kind != PathKind::kCheckpoint && kind != PathKind::kCheckpointDir) {
    return RejectPath(kind, path, why);
  }
  Env* env = Env::Default();
  if (kind == PathKind::kCheckpointDir) {
    auto entries = ListCheckpoints(env, path);
    if (!entries.ok()) {
      PrintError("cannot list " + path + ": " + entries.status().message());
      return kExitFailure;
    }
    const auto newest = std::find_if(entries->rbegin(), entries->rend(),
                                     [](const Entry& e) { return e.kind == Entry::kCommitted; });
    if (newest == entries->rend()) {
      PrintError("no committed checkpoint in " + path);
      return kExitUsage;
    }
    path = newest->path;
  }
  const double now = UnixNow();
  auto manifest = ReadManifest(env, path);
  if (!manifest.ok()) {
    const std::string reason = Shorten(manifest.status().message(), path);
    if (as_json) {
      json j = {{"path", path}, {"name", BaseName(path)}, {"ok", false}, {"damage", reason}};
      std::printf("%s\n", j.dump(2).c_str());
    }
    PrintError(path + " is DAMAGED: " + reason);
    return kExitFailure;
  }
  auto full = ReadCheckpoint(env, path);
  const Status damage = full.ok() ? Status::Ok() : full.status();
  const CheckpointContents& c = full.ok() ? *full : *manifest;
  if (as_json) {
    std::printf("%s\n", InspectJson(path, c, damage, now).dump(2).c_str());
  } else {
    PrintInspect(path, c, damage, now);
  }
  if (!damage.ok()) {
    PrintError(path + " is DAMAGED: " + Shorten(damage.message(), path));
    return kExitFailure;
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------
// verify

// One committed checkpoint, fully verified. Step, world size and shards come
// from the manifest when only the shards are damaged.
struct Verified {
  bool ok = false;
  std::string damage;  // the reason, when !ok
  std::optional<CheckpointContents> manifest;
  uint64_t disk_bytes = 0;
};

Verified Verify(Env* env, const std::string& path) {
  Verified v;
  v.disk_bytes = DiskBytes(path);
  if (!env->Exists(JoinPath(path, kManifestFile))) {
    v.damage = "not committed (no MANIFEST.json)";
    return v;
  }
  auto c = ReadCheckpoint(env, path);
  v.ok = c.ok();
  if (c.ok()) {
    c->blobs.clear();  // only the manifest's fields are reported
    v.manifest = std::move(*c);
    return v;
  }
  v.damage = Shorten(c.status().message(), path);
  if (auto m = ReadManifest(env, path); m.ok()) v.manifest = std::move(*m);
  return v;
}

// "ok  step 100, world 2, 2 shards, 2.8 KiB" (size on disk) or "DAMAGED: <reason>".
std::string VerifyLine(const Verified& v) {
  if (!v.ok) return "DAMAGED: " + v.damage;
  const CheckpointContents& c = *v.manifest;
  return "ok  step " + std::to_string(c.step) + ", world " + std::to_string(c.world_size) + ", " +
         std::to_string(c.shards.size()) + (c.shards.size() == 1 ? " shard, " : " shards, ") +
         HumanBytes(v.disk_bytes);
}

json VerifyJson(const std::string& name, const std::string& state, const Verified& v) {
  const CheckpointContents* m = v.manifest ? &*v.manifest : nullptr;
  return {{"name", name},
          {"state", state},
          {"ok", v.ok},
          {"damage", v.ok ? json(nullptr) : json(v.damage)},
          {"step", m ? json(m->step) : json(nullptr)},
          {"world_size", m ? json(m->world_size) : json(nullptr)},
          {"shards", m ? json(m->shards.size()) : json(nullptr)},
          {"bytes_on_disk", v.disk_bytes}};
}

int RunVerify(const std::string& arg, bool as_json) {
  const std::string path = StripTrailingSlashes(arg);
  std::string why;
  const PathKind kind = Classify(path, &why);
  if (kind != PathKind::kCheckpoint && kind != PathKind::kCheckpointDir) {
    return RejectPath(kind, path, why);
  }
  Env* env = Env::Default();
  if (kind == PathKind::kCheckpoint) {
    const Verified v = Verify(env, path);
    if (as_json) {
      std::printf("%s\n", VerifyJson(BaseName(path), "committed", v).dump(2).c_str());
    } else {
      std::printf("%s  %s\n", BaseName(path).c_str(), VerifyLine(v).c_str());
    }
    if (!v.ok) PrintError(path + " is damaged");
    return v.ok ? kExitOk : kExitFailure;
  }

  auto entries = ListCheckpoints(env, path);
  if (!entries.ok()) {
    PrintError("cannot list " + path + ": " + entries.status().message());
    return kExitFailure;
  }
  const std::string latest = ReadLatest(env, path);
  struct Checked {
    const Entry* entry;
    Verified v;
  };
  std::vector<Checked> checked;
  int committed = 0, damaged = 0;
  const Checked* restore = nullptr;
  for (const Entry& e : *entries) {
    checked.push_back({&e, e.kind == Entry::kCommitted ? Verify(env, e.path) : Verified{}});
    if (e.kind != Entry::kCommitted) continue;
    ++committed;
    damaged += checked.back().v.ok ? 0 : 1;
  }
  for (const Checked& c : checked) {  // oldest first: the last ok one is the newest
    if (c.entry->kind == Entry::kCommitted && c.v.ok) restore = &c;
  }

  Table table({"NAME", "STEP", "WORLD", "SHARDS", "SIZE", "STATUS"},
              {false, true, true, true, true, false});
  json rows = json::array();
  for (const Checked& c : checked) {
    const Entry& e = *c.entry;
    const CheckpointContents* m = c.v.manifest ? &*c.v.manifest : nullptr;
    std::string status;
    if (e.kind == Entry::kCommitted) {
      status = c.v.ok ? "ok" : "DAMAGED: " + c.v.damage;
      std::vector<std::string> marks;
      if (e.name == latest) marks.push_back("LATEST");
      if (&c == restore) marks.push_back("restore");
      for (size_t i = 0; i < marks.size(); ++i) status += (i == 0 ? " (" : ", ") + marks[i];
      if (!marks.empty()) status += ")";
    } else {
      status = e.kind == Entry::kPrepareArea ? kIncompleteNote : kUncommittedNote;
    }
    table.Add({e.name, std::to_string(m ? m->step : e.step),
               m ? std::to_string(m->world_size) : "-", m ? std::to_string(m->shards.size()) : "-",
               HumanBytes(e.kind == Entry::kCommitted ? c.v.disk_bytes : DiskBytes(e.path)),
               status});
    if (e.kind != Entry::kCommitted) continue;
    json row = VerifyJson(e.name, KindName(e.kind), c.v);
    row["latest"] = e.name == latest;
    row["restore"] = &c == restore;
    rows.push_back(row);
  }
  if (as_json) {
    const json j = {{"directory", path},
                    {"ok", damaged == 0},
                    {"checkpoints_verified", committed},
                    {"damaged", damaged},
                    {"latest", latest.empty() ? json(nullptr) : json(latest)},
                    {"restore", restore ? json(restore->entry->name) : json(nullptr)},
                    {"checkpoints", rows}};
    std::printf("%s\n", j.dump(2).c_str());
  } else if (committed == 0) {
    std::printf("no checkpoints in %s\n", path.c_str());
    return kExitOk;
  } else {
    std::fputs(table.Render().c_str(), stdout);
    std::printf("%d checkpoint%s verified, %s; %s\n", committed, committed == 1 ? "" : "s",
                damaged == 0 ? "all ok" : (std::to_string(damaged) + " damaged").c_str(),
                restore == nullptr ? "restore would fail: none is usable"
                                   : ("restore would pick " + restore->entry->name).c_str());
  }
  if (damaged > 0) {
    PrintError(std::to_string(damaged) + " of " + std::to_string(committed) + " checkpoint" +
               (committed == 1 ? "" : "s") + " in " + path + " damaged");
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace

std::string HumanBytes(uint64_t bytes) {
  if (bytes < 1024) return std::to_string(bytes) + " B";
  static const char* const kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  // Move up when one decimal would round to 1024.0.
  while (v >= 1023.95 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  return buf;
}

std::string HumanAge(double seconds) {
  if (seconds < -1) return "in the future";
  const int64_t s = static_cast<int64_t>(std::max(0.0, seconds));
  if (s < 60) return std::to_string(s) + "s ago";
  if (s < 3600) return std::to_string(s / 60) + "m ago";
  if (s < 86400) return std::to_string(s / 3600) + "h ago";
  return std::to_string(s / 86400) + "d ago";
}

void AddCkptCommand(CLI::App& app, int* exit_code) {
  CLI::App* ckpt = app.add_subcommand(
      "ckpt", "Look at checkpoint directories: list, inspect and verify checkpoints");
  ckpt->require_subcommand(1);
  ckpt->footer(
      "Exit codes: 0 done (verify: all ok), 1 damage found or other failure, 2 usage or bad "
      "input.");

  // Options live as long as `app`: the callbacks below run inside app.parse.
  struct Args {
    std::string dir;
    bool no_verify = false;
    bool json = false;
  };
  auto args = std::make_shared<Args>();

  CLI::App* ls = ckpt->add_subcommand(
      "ls",
      "List the checkpoints in DIR, oldest first: step, epoch/batch, world size, size, age;\n"
      "which one LATEST names, which one restore would pick (the newest that verifies),\n"
      "damaged ones and leftover prepare areas of interrupted saves.");
  ls->add_option("DIR", args->dir, "Checkpoint directory (CheckpointOptions::directory)")
      ->required()
      ->type_name("");
  ls->add_flag("--no-verify", args->no_verify,
               "Read manifests only, no shard hashing (fast for big checkpoints);\n"
               "`restore` then marks the newest readable manifest");
  ls->add_flag("--json", args->json, "Print JSON instead of the table");
  ls->callback([args, exit_code] { *exit_code = RunLs(args->dir, !args->no_verify, args->json); });

  CLI::App* inspect = ckpt->add_subcommand(
      "inspect",
      "Show one checkpoint: its manifest (step, world size, creation time, versions,\n"
      "signatures, counters, values), its shards, and statistics of every blob.\n"
      "DIR: the newest committed checkpoint in DIR; DIR/ckpt-N: that one.");
  inspect->add_option("DIR", args->dir, "Checkpoint directory (its newest), or DIR/ckpt-N")
      ->required()
      ->type_name("");
  inspect->add_flag("--json", args->json, "Print JSON instead of text");
  inspect->callback([args, exit_code] { *exit_code = RunInspect(args->dir, args->json); });

  CLI::App* verify = ckpt->add_subcommand(
      "verify",
      "Verify every committed checkpoint in DIR fully (manifest checksum, every shard's size\n"
      "and hash, blob coverage), or just DIR/ckpt-N. Exit 0 if all are ok, 1 if any is\n"
      "damaged, 2 for usage errors.");
  verify->add_option("DIR", args->dir, "Checkpoint directory (all of it), or DIR/ckpt-N")
      ->required()
      ->type_name("");
  verify->add_flag("--json", args->json, "Print JSON instead of the table");
  verify->callback([args, exit_code] { *exit_code = RunVerify(args->dir, args->json); });
}

}  // namespace holdfast::launcher
