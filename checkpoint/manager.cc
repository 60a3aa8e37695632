#include "checkpoint/manager.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "checkpoint/internal/manifest.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/reader.h"
#include "core/check.h"
#include "core/data_order.h"
#include "core/hash.h"
#include "core/version.h"

namespace holdfast {
namespace {

using internal::ShardToWrite;
using nlohmann::json;

using internal::kMaxManifestBytes;

std::string CheckpointName(int64_t step) { return "ckpt-" + std::to_string(step); }

std::string ShardName(int writer, int writers) {
  return "shard-" + std::to_string(writer) + "-of-" + std::to_string(writers) + ".bin";
}

std::string UtcNow(double unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

double UnixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Status WriteDurably(Env* env, const std::string& path, std::span<const char> data) {
  HOLDFAST_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(path));
  HOLDFAST_RETURN_IF_ERROR(file->Append(data));
  HOLDFAST_RETURN_IF_ERROR(file->Sync());
  return file->Close();
}

StatusOr<internal::WrittenShard> WriteShardDurably(Env* env, const std::string& path,
                                                   const ShardToWrite& shard) {
  HOLDFAST_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, env->NewWritableFile(path));
  HOLDFAST_ASSIGN_OR_RETURN(internal::WrittenShard written, internal::WriteShard(shard, *file));
  HOLDFAST_RETURN_IF_ERROR(file->Sync());
  HOLDFAST_RETURN_IF_ERROR(file->Close());
  return written;
}

// A Status carried across ranks as text: "<code number>|<message>".
std::string EncodeStatus(const Status& s) {
  return std::to_string(static_cast<int>(s.code())) + "|" + s.message();
}
Status DecodeStatus(const std::string& text) {
  const size_t bar = text.find('|');
  return Status(static_cast<StatusCode>(std::stoi(text.substr(0, bar))), text.substr(bar + 1));
}

// Removes a committed checkpoint: the manifest first, so that a crash half
// way leaves a directory that is plainly not a checkpoint.
Status RemoveCheckpoint(Env* env, const std::string& path) {
  const std::string manifest = JoinPath(path, kManifestFile);
  if (env->Exists(manifest)) HOLDFAST_RETURN_IF_ERROR(env->RemoveFile(manifest));
  return RemoveTree(env, path);
}

// A checkpoint has to belong to this model and optimizer (its blobs' names
// and sizes are checked as it is read into the live state).
Status CheckFitsLiveState(const CheckpointContents& c, Checkpoint& live) {
  if (c.model_signature != live.ModelSignature()) {
    return FailedPreconditionError("it was written for another model: it has " + c.model_signature +
                                   ", this run has " + live.ModelSignature());
  }
  if (c.optimizer_signature != live.OptimizerSignature()) {
    return FailedPreconditionError("it was written for another optimizer: it has " +
                                   c.optimizer_signature + ", this run has " +
                                   live.OptimizerSignature());
  }
  return Status::Ok();
}

}  // namespace

CheckpointManager::CheckpointManager(Checkpoint* checkpoint, Communicator* comm,
                                     CheckpointOptions options)
    : checkpoint_(checkpoint),
      comm_(comm),
      options_(std::move(options)),
      env_(options_.env != nullptr ? options_.env : Env::Default()) {
  HOLDFAST_CHECK(checkpoint_ != nullptr && comm_ != nullptr, "CheckpointManager needs both");
  if (options_.max_to_keep < 1) options_.max_to_keep = 1;
  if (options_.save_before_preemption) {
    preemption_ = std::make_unique<PreemptionHandler>(options_.preemption);
  }
}

CheckpointManager::~CheckpointManager() = default;

StatusOr<bool> CheckpointManager::SaveIfPreempted(Replica& replica) {
  if (preemption_ && preemption_->requested()) replica.RequestStop();
  if (replica.control().stop_requests == 0) return false;
  if (last_committed_step_ != checkpoint_->step()) HOLDFAST_RETURN_IF_ERROR(Save(/*force=*/true));
  return true;
}

Status CheckpointManager::Save(bool force) {
  const int64_t step = checkpoint_->step();
  // Every rank has the same step and history, so all skip together.
  if (!force && options_.checkpoint_interval > 0 && last_committed_step_ >= 0 &&
      step - last_committed_step_ < options_.checkpoint_interval) {
    return Status::Ok();
  }
  const bool chief = comm_->rank() == 0;
  const int writers = options_.chief_writes_all ? 1 : comm_->size();
  const std::string name = CheckpointName(step);
  const std::string& dir = options_.directory;

  // Phase 0: the chief opens a prepare area with a fresh name.
  std::string area;
  if (chief) {
    std::random_device random;
    char nonce[17];
    std::snprintf(nonce, sizeof nonce, "%08x%08x", random(), random());
    const std::string tmp = JoinPath(dir, "." + name + ".tmp-" + nonce);
    Status s = env_->CreateDir(dir);
    if (s.ok()) s = env_->CreateDir(tmp);
    // (append, not "+" + ...: GCC 12 warns falsely on the latter, bug 105651)
    area = s.ok() ? std::string("+").append(tmp) : std::string("-").append(s.ToString());
  }
  area = comm_->BroadcastString(area, 0);
  if (area[0] == '-') {
    return AbortedError("checkpoint " + name + " not saved: " + area.substr(1));
  }
  const std::string tmp = area.substr(1);

  // Phase 1 (prepare): each writer writes and fsyncs its shard, then votes.
  json vote = json::object();
  if (comm_->rank() < writers) {
    ShardToWrite shard;
    shard.rank = static_cast<uint32_t>(comm_->rank());
    shard.world = static_cast<uint32_t>(comm_->size());
    shard.step = static_cast<uint64_t>(step);
    for (const NamedBlob& blob : checkpoint_->Blobs()) {
      const Range r =
          ReplicaSlice(static_cast<int64_t>(blob.values.size()), comm_->rank(), writers);
      shard.slices.push_back({blob.name, blob.values.size(), static_cast<uint64_t>(r.begin),
                              blob.values.subspan(r.begin, r.size())});
    }
    if (chief) {
      shard.counters = &checkpoint_->counters;
      shard.values = &checkpoint_->values;
    }
    const std::string file = ShardName(comm_->rank(), writers);
    const StatusOr<internal::WrittenShard> written =
        WriteShardDurably(env_, JoinPath(tmp, file), shard);
    vote = {{"ok", written.ok()}, {"file", file}, {"error", written.status().ToString()}};
    if (written.ok()) {
      vote["bytes"] = written->bytes;
      vote["xxh3"] = HexU64(written->xxh3);
    }
  }
  const std::vector<std::string> votes = comm_->Gather(vote.dump(), 0);

  // Phase 2 (decide): the chief commits or aborts; everyone learns which.
  std::string outcome;
  if (chief) outcome = EncodeStatus(SaveOnChief(tmp, JoinPath(dir, name), votes));
  Status committed = DecodeStatus(comm_->BroadcastString(outcome, 0));
  if (committed.ok()) last_committed_step_ = step;
  return committed;
}

Status CheckpointManager::SaveOnChief(const std::string& tmp, const std::string& final_dir,
                                      const std::vector<std::string>& votes) {
  const int64_t step = checkpoint_->step();
  const std::string name = CheckpointName(step);
  json shards = json::array();
  std::string failures;
  for (size_t r = 0; r < votes.size(); ++r) {
    const json vote = json::parse(votes[r]);
    if (vote.empty()) continue;  // not a writer
    if (!vote["ok"].get<bool>()) {
      if (!failures.empty()) failures += "; ";
      failures += "rank ";
      failures += std::to_string(r);
      failures += ": ";
      failures += vote["error"].get<std::string>();
      continue;
    }
    shards.push_back(
        {{"file", vote["file"]}, {"bytes", vote["bytes"]}, {"xxh3", vote["xxh3"]}, {"rank", r}});
  }
  auto abort = [&](const std::string& why) {
    (void)RemoveTree(env_, tmp);  // best effort: recovery removes leftovers too
    return AbortedError("checkpoint " + name + " not committed, the previous one stays: " + why);
  };
  if (!failures.empty()) return abort(failures);

  if (env_->Exists(final_dir)) {
    if (ReadCheckpoint(env_, final_dir).ok()) {
      // This step was committed before (a resumed run saving the same step,
      // or a retry after a failed directory fsync): resume is exact, so it
      // holds this state already. Its rename may not be durable yet.
      (void)RemoveTree(env_, tmp);
      return env_->SyncDir(options_.directory);
    }
    // A damaged or half-deleted checkpoint of this step: replace it. Its
    // manifest goes first, so a crash from here on leaves the previous
    // checkpoint as the one restore picks.
    const Status removed = RemoveCheckpoint(env_, final_dir);
    if (!removed.ok())
      return abort("cannot replace the damaged " + name + ": " + removed.ToString());
  }
  const double now = UnixNow();
  json manifest = {
      {"format", "holdfast-checkpoint"},
      {"format_version", internal::kShardFormatVersion},
      {"holdfast_version", HOLDFAST_VERSION},
      {"step", step},
      {"world_size", comm_->size()},
      {"created_unix", now},
      {"created_utc", UtcNow(now)},
      {"model_signature", checkpoint_->ModelSignature()},
      {"optimizer_signature", checkpoint_->OptimizerSignature()},
      {"counters", checkpoint_->counters},
      {"shards", shards},
  };
  json blobs = json::array();
  for (const NamedBlob& blob : checkpoint_->Blobs()) {
    blobs.push_back({{"name", blob.name}, {"floats", blob.values.size()}});
  }
  manifest["blobs"] = blobs;
  manifest["checksum"] = internal::ManifestChecksum(manifest);
  const std::string text = manifest.dump(2) + "\n";

  Status s = WriteDurably(env_, JoinPath(tmp, kManifestFile), text);
  if (s.ok()) s = env_->SyncDir(tmp);
  if (!s.ok()) return abort(s.ToString());
  // The commit point: after this rename (made durable by the fsync of the
  // directory) the checkpoint exists.
  s = env_->Rename(tmp, final_dir);
  if (!s.ok()) return abort(s.ToString());
  s = env_->SyncDir(options_.directory);
  if (!s.ok()) {
    return AbortedError("checkpoint " + name + " may not be durable: " + s.ToString());
  }
  // LATEST is a hint for people and tools; recovery trusts the manifests.
  // So it costs no fsync: a power cut may leave the previous hint.
  s = AtomicWriteFile(env_, JoinPath(options_.directory, kLatestFile), name + "\n",
                      Durability::kHint);
  if (!s.ok())
    std::fprintf(stderr, "holdfast: warning: LATEST not updated: %s\n", s.ToString().c_str());
  s = ApplyKeepPolicy();
  if (!s.ok()) std::fprintf(stderr, "holdfast: warning: keep policy: %s\n", s.ToString().c_str());
  return Status::Ok();
}

StatusOr<std::optional<int64_t>> CheckpointManager::RestoreLatest() {
  const std::string& dir = options_.directory;
  std::optional<CheckpointContents> chosen;
  Status status = Status::Ok();
  if (comm_->rank() == 0 && env_->Exists(dir)) {
    auto names = env_->ListDir(dir);
    if (!names.ok()) {
      status = names.status();
    } else {
      std::vector<std::pair<int64_t, std::string>> candidates;
      for (const std::string& name : *names) {
        int64_t step = 0;
        if (ParsePrepareAreaName(name)) {
          // An interrupted save: never committed, never read.
          (void)RemoveTree(env_, JoinPath(dir, name));
        } else if (ParseCheckpointName(name, &step)) {
          candidates.emplace_back(step, name);
        }
      }
      std::sort(candidates.rbegin(), candidates.rend());
      BlobDestinations live;
      for (const NamedBlob& blob : checkpoint_->Blobs()) live.emplace(blob.name, blob.values);
      std::string damaged;
      for (const auto& [step, name] : candidates) {
        const std::string path = JoinPath(dir, name);
        if (!env_->Exists(JoinPath(path, kManifestFile))) continue;  // half-deleted, not committed
        // The manifest alone tells whether it belongs to this model; then
        // the shards are read straight into the live state, which is
        // written only once the whole checkpoint has been verified.
        auto loaded = ReadManifest(env_, path);
        if (loaded.ok()) {
          const Status fits = CheckFitsLiveState(*loaded, *checkpoint_);
          if (!fits.ok()) loaded = fits;
        }
        if (loaded.ok()) loaded = ReadCheckpoint(env_, path, &live);
        if (loaded.ok()) {
          chosen = std::move(*loaded);
          break;
        }
        if (loaded.status().code() == StatusCode::kFailedPrecondition) {
          status = loaded.status().WithContext("checkpoint " + path);
          break;
        }
        std::fprintf(stderr, "holdfast: checkpoint %s is damaged (%s); falling back\n",
                     path.c_str(), loaded.status().message().c_str());
        if (!damaged.empty()) damaged += "; ";
        damaged += name;
        damaged += ": ";
        damaged += loaded.status().message();
      }
      if (status.ok() && !chosen && !damaged.empty()) {
        status = DataLossError("no usable checkpoint in " + dir + " (" + damaged + ")");
      }
    }
  }
  // Everyone learns the outcome; then the chief's state reaches every rank.
  const std::string outcome =
      comm_->BroadcastString(!status.ok() ? std::string("E").append(EncodeStatus(status))
                                          : std::string(chosen ? "L" : "N"),
                             0);
  if (comm_->rank() == 0 && outcome[0] != 'E') {
    if (const char* report = std::getenv(kRestoreReportEnv); report != nullptr && *report) {
      (void)AtomicWriteFile(env_, report,
                            chosen ? "step " + std::to_string(chosen->step) + "\n" : "none\n");
    }
  }
  if (outcome[0] == 'E') return DecodeStatus(outcome.substr(1));
  if (outcome[0] == 'N') {
    // A fresh start: checkpoint_interval counts from here.
    last_committed_step_ = checkpoint_->step();
    return std::optional<int64_t>();
  }

  for (const NamedBlob& blob : checkpoint_->Blobs()) {
    comm_->Broadcast(blob.values.data(), blob.values.size_bytes(), 0);
  }
  json scalars;
  if (chosen) {
    scalars = {{"step", chosen->step}, {"counters", chosen->counters}};
    // Doubles travel as their bit patterns: exact, whatever JSON would print.
    json values = json::object();
    for (const auto& [key, v] : chosen->values) {
      uint64_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      values[key] = bits;
    }
    scalars["values"] = values;
  }
  scalars = json::parse(comm_->BroadcastString(chosen ? scalars.dump() : "", 0));
  const int64_t step = scalars["step"].get<int64_t>();
  checkpoint_->optimizer().set_iterations(step);
  checkpoint_->counters = scalars["counters"].get<std::map<std::string, int64_t>>();
  checkpoint_->values.clear();
  for (const auto& [key, bits] : scalars["values"].items()) {
    const uint64_t b = bits.get<uint64_t>();
    double v;
    std::memcpy(&v, &b, sizeof v);
    checkpoint_->values[key] = v;
  }
  // All ranks confirm they restored the same state.
  const std::vector<int64_t> check = {step, static_cast<int64_t>(Xxh3(scalars.dump()))};
  const Communicator::MinMax range = comm_->AllReduceMinMax(check);
  HOLDFAST_CHECK(range.min == range.max, "ranks restored different checkpoints");
  last_committed_step_ = step;
  return std::optional<int64_t>(step);
}

StatusOr<std::optional<int64_t>> CheckpointManager::RestoreOrInitialize(
    const std::function<void()>& initialize) {
  StatusOr<std::optional<int64_t>> restored = RestoreLatest();
  if (restored.ok() && !restored->has_value() && initialize) initialize();
  return restored;
}

std::vector<CheckpointInfo> CheckpointManager::Checkpoints() const {
  std::vector<CheckpointInfo> out;
  auto names = env_->ListDir(options_.directory);
  if (!names.ok()) return out;
  for (const std::string& name : *names) {
    if (!ParseCheckpointName(name)) continue;
    const std::string path = JoinPath(options_.directory, name);
    auto manifest = ReadManifest(env_, path);
    if (!manifest.ok()) continue;  // not committed, or damaged: not listed
    out.push_back({name, path, manifest->step, manifest->created_unix, manifest->bytes(),
                   manifest->world_size});
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointInfo& a, const CheckpointInfo& b) { return a.step < b.step; });
  return out;
}

std::optional<CheckpointInfo> CheckpointManager::Latest() const {
  std::vector<CheckpointInfo> all = Checkpoints();
  if (all.empty()) return std::nullopt;
  return std::move(all.back());
}

Status CheckpointManager::ApplyKeepPolicy() {
  const std::vector<CheckpointInfo> all = Checkpoints();
  const size_t keep_newest = static_cast<size_t>(options_.max_to_keep);
  // Removals are made durable so that what was removed stays removed; a
  // commit that removes nothing costs no directory fsync here.
  bool removed = false;
  auto finish = [&] { return removed ? env_->SyncDir(options_.directory) : Status::Ok(); };
  // Directories named like checkpoints that no manifest commits (a removal
  // cut short, a manifest destroyed) and older than every kept checkpoint
  // can never be restored: they are garbage.
  if (!all.empty()) {
    HOLDFAST_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(options_.directory));
    const size_t first_kept = all.size() - std::min(all.size(), keep_newest);
    for (const std::string& name : names) {
      int64_t step = 0;
      if (!ParseCheckpointName(name, &step) || step >= all[first_kept].step) continue;
      const std::string path = JoinPath(options_.directory, name);
      if (!ReadManifest(env_, path).ok()) {
        HOLDFAST_RETURN_IF_ERROR(RemoveTree(env_, path));
        removed = true;
      }
    }
  }
  if (all.size() <= keep_newest) return finish();
  // keep_every_n_hours, stateless: in each n-hour window since the oldest
  // checkpoint, the oldest checkpoint of the window is kept for good.
  const double window = options_.keep_every_n_hours * 3600.0;
  std::map<int64_t, bool> window_has_keeper;
  for (size_t i = 0; i + keep_newest < all.size(); ++i) {
    if (window > 0) {
      const int64_t w =
          static_cast<int64_t>(std::floor((all[i].created_unix - all[0].created_unix) / window));
      if (!window_has_keeper[w]) {
        window_has_keeper[w] = true;
        continue;
      }
    }
    HOLDFAST_RETURN_IF_ERROR(RemoveCheckpoint(env_, all[i].path));
    removed = true;
  }
  return finish();
}

Status CheckpointManager::DeleteAll() {
  std::string outcome;
  if (comm_->rank() == 0) {
    Status s = Status::Ok();
    auto names = env_->ListDir(options_.directory);
    if (names.ok()) {
      for (const std::string& name : *names) {
        const std::string path = JoinPath(options_.directory, name);
        if (ParseCheckpointName(name)) {
          s = RemoveCheckpoint(env_, path);
        } else if (ParsePrepareAreaName(name)) {
          s = RemoveTree(env_, path);
        } else if (name == kLatestFile) {
          s = env_->RemoveFile(path);
        }
        if (!s.ok()) break;
      }
      if (s.ok()) s = env_->SyncDir(options_.directory);
    }
    outcome = EncodeStatus(s);
  }
  return DecodeStatus(comm_->BroadcastString(outcome, 0));
}

}  // namespace holdfast
