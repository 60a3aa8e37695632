#include "checkpoint/retention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>

#include "checkpoint/internal/manager_internal.h"
#include "checkpoint/names.h"
#include "checkpoint/reader.h"

namespace holdfast {

std::vector<size_t> CheckpointsToRemove(std::span<const double> created_unix, int max_to_keep,
                                        double keep_every_n_hours) {
  std::vector<size_t> remove;
  const size_t keep_newest = static_cast<size_t>(std::max(max_to_keep, 1));
  if (created_unix.size() <= keep_newest) return remove;
  const double window = keep_every_n_hours * 3600.0;
  std::set<int64_t> windows_with_keeper;
  for (size_t i = 0; i + keep_newest < created_unix.size(); ++i) {
    if (window > 0) {
      const auto w = static_cast<int64_t>(std::floor((created_unix[i] - created_unix[0]) / window));
      if (windows_with_keeper.insert(w).second) continue;  // the window's oldest: kept
    }
    remove.push_back(i);
  }
  return remove;
}

// ---- CheckpointManager: listing and the keep policy ---------------------------

using internal::RemoveCheckpoint;

std::vector<CheckpointInfo> CheckpointManager::Checkpoints() const {
  std::vector<CheckpointInfo> out;
  auto entries = ListCheckpoints(env_, options_.directory);
  if (!entries.ok()) return out;
  for (const DirectoryEntry& e : *entries) {
    if (e.kind != DirectoryEntry::kCommitted) continue;
    auto manifest = ReadManifest(env_, e.path);
    if (!manifest.ok()) continue;  // damaged: not listed
    out.push_back({e.name, e.path, manifest->step, manifest->created_unix, manifest->bytes(),
                   manifest->world_size});
  }
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
  bool removed = false;
  // Directories named like checkpoints that no manifest commits (a removal
  // cut short, a manifest destroyed) and older than every kept checkpoint
  // can never be restored: they are garbage.
  if (!all.empty()) {
    HOLDFAST_ASSIGN_OR_RETURN(std::vector<DirectoryEntry> entries,
                              ListCheckpoints(env_, options_.directory));
    const size_t first_kept = all.size() - std::min(all.size(), keep_newest);
    for (const DirectoryEntry& e : entries) {
      if (e.kind == DirectoryEntry::kPrepareArea || e.step >= all[first_kept].step) continue;
      if (!ReadManifest(env_, e.path).ok()) {
        HOLDFAST_RETURN_IF_ERROR(RemoveTree(env_, e.path));
        removed = true;
      }
    }
  }
  std::vector<double> created;
  for (const CheckpointInfo& c : all) created.push_back(c.created_unix);
  for (size_t i : CheckpointsToRemove(created, options_.max_to_keep, options_.keep_every_n_hours)) {
    HOLDFAST_RETURN_IF_ERROR(RemoveCheckpoint(env_, all[i].path));
    removed = true;
  }
  // Removals are made durable so that what was removed stays removed; a
  // commit that removes nothing costs no directory fsync here.
  return removed ? env_->SyncDir(options_.directory) : Status::Ok();
}

Status CheckpointManager::DeleteAll() {
  HOLDFAST_RETURN_IF_ERROR(OpenDirectory());
  (void)WaitForSave();
  Status s = Status::Ok();
  if (comm_->rank() == 0) {
    auto entries = ListCheckpoints(env_, options_.directory);
    if (entries.ok()) {
      for (const DirectoryEntry& e : *entries) {
        s = e.kind == DirectoryEntry::kPrepareArea ? RemoveTree(env_, e.path)
                                                   : RemoveCheckpoint(env_, e.path);
        if (!s.ok()) break;
      }
      const std::string latest = JoinPath(options_.directory, kLatestFile);
      if (s.ok() && env_->Exists(latest)) s = env_->RemoveFile(latest);
      if (s.ok()) s = env_->SyncDir(options_.directory);
    }
  }
  return comm_->BroadcastStatus(s, 0);
}

}  // namespace holdfast
