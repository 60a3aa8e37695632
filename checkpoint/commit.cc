// CheckpointManager, the chief's side of a commit: votes checked, manifest
// written, the prepare area published or aborted.
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "checkpoint/internal/manager_internal.h"
#include "checkpoint/internal/manifest.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "checkpoint/run_layout.h"
#include "core/hash.h"
#include "core/version.h"

namespace holdfast {

using internal::RemoveCheckpoint;
using internal::SyncAndClose;
using internal::SyncTogether;
using internal::UnixNow;
using internal::UtcNow;
using internal::VoteFile;
using nlohmann::json;

Status CheckpointManager::CommitOnChief(const Ticket& ticket,
                                        const std::vector<std::string>& votes) {
  StatusOr<std::unique_ptr<WritableFile>> manifest = WriteManifest(ticket, votes);
  if (!manifest.ok()) return AbortCommit(ticket, manifest.status().message());
  const Status synced = SyncTogether({[&manifest] { return SyncAndClose(**manifest); },
                                      [this, &ticket] { return env_->SyncDir(ticket.area); }});
  if (!synced.ok()) return AbortCommit(ticket, synced.ToString());
  return Publish(ticket);
}

StatusOr<std::unique_ptr<WritableFile>> CheckpointManager::WriteManifest(
    const Ticket& ticket, const std::vector<std::string>& votes) {
  json shards = json::array();
  json blobs = json::array();
  for (const Ticket::Blob& blob : ticket.blobs)
    blobs.push_back({{"name", blob.name}, {"floats", blob.floats}});
  std::string failures;
  auto note = [&failures](const std::string& why) {
    if (!failures.empty()) failures += "; ";
    failures += why;
  };
  // (append, not "rank " + ...: GCC 12 warns falsely on the latter, bug 105651)
  auto fail = [&note](size_t rank, const std::string& why) {
    note(std::string("rank ").append(std::to_string(rank)).append(": ").append(why));
  };
  for (size_t r = 0; r < votes.size(); ++r) {
    const json vote = json::parse(votes[r], nullptr, /*allow_exceptions=*/false);
    if (vote.is_object() && vote.empty()) continue;  // not a writer
    if (!vote.is_object() || !vote.value("ok", false)) {
      fail(r, vote.is_object() ? vote.value("error", "no error given") : "unreadable vote");
      continue;
    }
    shards.push_back({{"file", vote["file"]},
                      {"bytes", vote["bytes"]},
                      {"xxh3", vote["xxh3"]},
                      {"rank", r},
                      {"slices", vote["slices"]}});
    if (r == 0) continue;  // the chief's blobs are the ticket's
    try {
      if (vote.at("tracked") != ticket.tracked) {
        fail(r, "it tracks other objects than the chief (paths, kinds or sizes differ)");
        continue;
      }
      for (const auto& [path, hash] : vote.at("replicas").items()) {
        const auto chief = ticket.replica_hashes.find(path);
        if (chief != ticket.replica_hashes.end() && chief->second != hash.get<std::string>()) {
          fail(r, "its copy of the replicated '" + path + "' differs from the chief's");
        }
      }
      for (const json& blob : vote.at("per_rank_blobs")) {
        blobs.push_back({{"name", blob.at(0)}, {"floats", blob.at(1)}});
      }
    } catch (const json::exception& e) {
      fail(r, std::string("malformed vote: ") + e.what());
    }
  }
  // Every per-rank object has a blob from every rank.
  std::set<std::string> listed;
  for (const json& b : blobs) listed.insert(b["name"].get<std::string>());
  json objects = json::array();
  for (const ObjectInfo& info : ticket.objects) {
    for (const std::string& blob : info.blobs) {
      if (!listed.contains(blob)) note("no blob " + blob + " of " + info.path + " was written");
    }
    objects.push_back(ObjectToJson(info));
  }
  if (!failures.empty()) return AbortedError(failures);
  // Votes left by writers of an asynchronous save are not part of it.
  for (int r = 1; r < ticket.world; ++r) {
    const std::string vote_file = VoteFile(ticket.area, r);
    if (env_->Exists(vote_file)) (void)env_->RemoveFile(vote_file);
  }
  const double now = UnixNow();
  json manifest = {
      {"format", "holdfast-checkpoint"},
      {"format_version", internal::kShardFormatVersion},
      {"holdfast_version", HOLDFAST_VERSION},
      {"step", ticket.step},
      {"world_size", ticket.world},
      {"created_unix", now},
      {"created_utc", UtcNow(now)},
      {"model_signature", ticket.model_signature},
      {"optimizer_signature", ticket.optimizer_signature},
      {"counters", ticket.counters},
      {"shards", shards},
  };
  manifest["blobs"] = blobs;
  manifest["objects"] = objects;
  manifest["checksum"] = internal::ManifestChecksum(manifest);
  const std::string text = manifest.dump(2) + "\n";
  StatusOr<std::unique_ptr<WritableFile>> file =
      env_->NewWritableFile(JoinPath(ticket.area, kManifestFile));
  if (!file.ok()) return AbortedError(file.status().ToString());
  const Status written = (*file)->Append(text);
  if (!written.ok()) return AbortedError(written.ToString());
  return file;
}

Status CheckpointManager::Publish(const Ticket& ticket) {
  const std::string final_dir = JoinPath(options_.directory, ticket.name);
  const std::string& name = ticket.name;
  if (env_->Exists(final_dir)) {
    if (ReadCheckpoint(env_, final_dir).ok()) {
      // This step was committed before (a resumed run saving the same step,
      // or a retry after a failed directory fsync): resume is exact, so it
      // holds this state already. Its rename may not be durable yet.
      (void)RemoveTree(env_, ticket.area);
      return env_->SyncDir(options_.directory);
    }
    // A damaged or half-deleted checkpoint of this step: replace it. Its
    // manifest goes first, so a crash from here on leaves the previous
    // checkpoint as the one restore picks.
    const Status removed = RemoveCheckpoint(env_, final_dir);
    if (!removed.ok()) {
      return AbortCommit(ticket, "cannot replace the damaged " + name + ": " + removed.ToString());
    }
  }
  // The commit point: after this rename (made durable by the fsync of the
  // directory) the checkpoint exists.
  Status s = env_->Rename(ticket.area, final_dir);
  if (!s.ok()) return AbortCommit(ticket, s.ToString());
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

Status CheckpointManager::AbortCommit(const Ticket& ticket, const std::string& why) {
  (void)RemoveTree(env_, ticket.area);  // best effort: recovery removes leftovers too
  return AbortedError("checkpoint " + ticket.name +
                      " not committed, the previous one stays: " + why);
}

}  // namespace holdfast
