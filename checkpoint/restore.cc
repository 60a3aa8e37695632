// CheckpointManager, restore: the newest valid checkpoint, falling back past
// damaged ones, read by the chief and broadcast.
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "checkpoint/internal/manager_internal.h"
#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "checkpoint/run_layout.h"
#include "core/check.h"
#include "core/hash.h"

namespace holdfast {

using nlohmann::json;

namespace {

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

// Which tracked objects a checkpoint restores: strict, as tf.train.Checkpoint
// (every tracked object saved, every saved one tracked, each of its kind and
// size), relaxed by `options`. One line names every difference.
struct RestorePlan {
  std::vector<size_t> restored;      // indices into Checkpoint::objects()
  std::vector<std::string> fresh;    // tracked, not saved (allow_missing)
  std::vector<std::string> ignored;  // saved, not tracked (expect_partial)
};

StatusOr<RestorePlan> MatchObjects(const std::vector<ObjectInfo>& saved,
                                   const std::vector<TrackedObject>& tracked,
                                   const RestoreOptions& options) {
  RestorePlan plan;
  std::string missing, unused, differ;
  auto add = [](std::string& list, const std::string& item) {
    if (!list.empty()) list += ", ";
    list += item;
  };
  std::map<std::string, const ObjectInfo*> by_path;
  for (const ObjectInfo& info : saved) by_path.emplace(info.path, &info);
  for (size_t i = 0; i < tracked.size(); ++i) {
    const ObjectInfo& live = tracked[i].info;
    const auto it = by_path.find(live.path);
    if (it == by_path.end()) {
      if (options.allow_missing) {
        plan.fresh.push_back(live.path);
      } else {
        add(missing, live.path);
      }
      continue;
    }
    if (const std::string why = Mismatch(*it->second, live); !why.empty()) {
      add(differ, live.path + " (" + why + ")");
    }
    plan.restored.push_back(i);
    by_path.erase(it);
  }
  for (const auto& [path, info] : by_path) {
    if (options.expect_partial) {
      plan.ignored.push_back(path);
    } else {
      add(unused, path);
    }
  }
  std::string why;
  auto part = [&](const char* what, const std::string& list) {
    if (list.empty()) return;
    if (!why.empty()) why += "; ";
    why += what + list;
  };
  part("it has no ", missing);
  part("other kinds or sizes: ", differ);
  part("it holds what this run does not track: ", unused);
  if (!why.empty()) return FailedPreconditionError(why);
  return plan;
}

// The saved archives of a serializable object, from the staged blobs.
StatusOr<std::vector<std::string>> SavedArchives(const CheckpointContents& c,
                                                 const ObjectInfo& saved) {
  std::vector<std::string> archives;
  for (const std::string& blob : saved.blobs) {
    const auto staged = c.blobs.find(blob);
    if (staged == c.blobs.end())
      return DataLossError(saved.path + ": its blob " + blob + " was not read");
    auto bytes = UnpackBytes(std::as_bytes(std::span(staged->second)));
    if (!bytes.ok()) return bytes.status().WithContext(saved.path);
    archives.push_back(std::move(*bytes));
  }
  return archives;
}

}  // namespace

StatusOr<std::optional<int64_t>> CheckpointManager::RestoreLatest(const RestoreOptions& options) {
  HOLDFAST_RETURN_IF_ERROR(OpenDirectory());
  (void)WaitForSave();  // its outcome is on disk for the chief to find
  const std::string& dir = options_.directory;
  std::vector<TrackedObject>& objects = checkpoint_->objects();
  const int rank = comm_->rank(), world = comm_->size();
  {
    // Every rank restores the objects the chief's plan names, in its order:
    // they must track the same ones.
    const std::string tracked = internal::TrackedHash(objects);
    const std::vector<int64_t> hash = {static_cast<int64_t>(Xxh3(tracked))};
    const Communicator::MinMax range = comm_->AllReduceMinMax(hash);
    if (range.min != range.max) {
      return FailedPreconditionError(
          "the ranks track different objects (paths, kinds or sizes differ): every rank must "
          "Track the same ones in the same order");
    }
  }
  std::optional<CheckpointContents> chosen;
  RestorePlan plan;
  // The chief's: the archives of each restored serializable object, and
  // what assigns them (found while reading, applied once all is verified).
  std::map<size_t, std::vector<std::string>> archives;
  std::vector<std::function<void()>> assign;
  Status status = Status::Ok();
  if (rank == 0 && env_->Exists(dir)) {
    auto entries = ListCheckpoints(env_, dir);
    if (!entries.ok()) {
      status = entries.status();
    } else {
      for (const DirectoryEntry& e : *entries) {
        // An interrupted save: never committed, never read.
        if (e.kind == DirectoryEntry::kPrepareArea) (void)RemoveTree(env_, e.path);
      }
      auto read = [&](const DirectoryEntry& e) -> StatusOr<CheckpointContents> {
        // The manifest alone tells whether it belongs to this run; then
        // the shards are read straight into the live state, which is
        // written only once the whole checkpoint has been verified and
        // every serializable object has read as its type.
        auto loaded = ReadManifest(env_, e.path);
        if (loaded.ok()) {
          Status fits = CheckFitsLiveState(*loaded, *checkpoint_);
          std::string warning;
          if (fits.ok() && Layout() != nullptr) {
            fits = CheckRunLayout(loaded->counters, loaded->world_size, *Layout(),
                                  omp_get_max_threads(), world, &warning);
          }
          if (fits.ok()) {
            auto matched = MatchObjects(loaded->objects, objects, options);
            if (matched.ok()) {
              plan = std::move(*matched);
            } else {
              fits = matched.status();
            }
          }
          if (!fits.ok()) loaded = fits;
          if (!warning.empty()) {
            std::fprintf(stderr, "holdfast: warning: checkpoint %s: %s\n", e.path.c_str(),
                         warning.c_str());
          }
        }
        if (loaded.ok()) {
          std::map<std::string, const ObjectInfo*> saved;
          for (const ObjectInfo& info : loaded->objects) saved.emplace(info.path, &info);
          ReadTargets targets;
          for (size_t i : plan.restored) {
            if (objects[i].info.kind == ObjectKind::kSerializable) continue;
            for (const NamedBlob& blob : objects[i].blobs()) {
              targets.live.emplace(blob.name, blob.bytes);
            }
          }
          for (const std::string& path : plan.ignored) {  // expect_partial: verified, not kept
            for (const std::string& blob : saved.at(path)->blobs) targets.skip.insert(blob);
          }
          archives.clear();
          assign.clear();
          targets.before_live = [&](const CheckpointContents& c) -> Status {
            for (size_t i : plan.restored) {
              if (objects[i].info.kind != ObjectKind::kSerializable) continue;
              HOLDFAST_ASSIGN_OR_RETURN(archives[i],
                                        SavedArchives(c, *saved.at(objects[i].info.path)));
              HOLDFAST_ASSIGN_OR_RETURN(std::function<void()> apply,
                                        objects[i].load(archives[i], rank, world));
              assign.push_back(std::move(apply));
              // A reshard builds each rank's object: every rank's must come
              // out before anything changes anywhere.
              const bool reshards =
                  objects[i].info.per_rank && archives[i].size() != static_cast<size_t>(world);
              for (int r = 1; reshards && r < world; ++r) {
                HOLDFAST_RETURN_IF_ERROR(objects[i].load(archives[i], r, world).status());
              }
            }
            return Status::Ok();
          };
          loaded = ReadCheckpoint(env_, e.path, &targets);
        }
        if (loaded.status().code() == StatusCode::kFailedPrecondition) {
          return loaded.status().WithContext("checkpoint " + e.path);
        }
        return loaded;
      };
      auto newest = ReadNewestValid(*entries, dir, read);
      if (newest.ok()) {
        chosen = std::move(*newest);
      } else {
        status = newest.status();
      }
    }
  }
  // Everyone learns the outcome; then the chief's state reaches every rank.
  HOLDFAST_RETURN_IF_ERROR(comm_->BroadcastStatus(status, 0));
  int64_t found = chosen ? 1 : 0;
  comm_->Broadcast(&found, sizeof found, 0);
  if (rank == 0) {
    if (const char* report = std::getenv(kRestoreReportEnv); report != nullptr && *report) {
      (void)AtomicWriteFile(env_, report,
                            chosen ? "step " + std::to_string(chosen->step) + "\n" : "none\n");
    }
  }
  if (found == 0) {
    // A fresh start: checkpoint_interval counts from here.
    interval_start_step_ = checkpoint_->step();
    fresh_objects_.clear();
    return std::optional<int64_t>();
  }

  // Which objects come back, from the chief's plan; then each in turn.
  json plan_json;
  if (rank == 0) plan_json = {{"restored", plan.restored}, {"fresh", plan.fresh}};
  plan_json = json::parse(comm_->BroadcastString(rank == 0 ? plan_json.dump() : "", 0));
  plan.restored = plan_json["restored"].get<std::vector<size_t>>();
  fresh_objects_ = plan_json["fresh"].get<std::vector<std::string>>();
  if (rank == 0) {
    for (const std::function<void()>& apply : assign) apply();
    for (const std::string& path : fresh_objects_) {
      std::fprintf(stderr, "holdfast: checkpoint %s has no '%s': it starts fresh\n",
                   chosen->name.c_str(), path.c_str());
    }
    for (const std::string& path : plan.ignored) {
      std::fprintf(stderr, "holdfast: checkpoint %s: '%s' not restored (expect_partial)\n",
                   chosen->name.c_str(), path.c_str());
    }
  }
  for (size_t i : plan.restored) {
    TrackedObject& object = objects.at(i);
    if (object.info.kind != ObjectKind::kSerializable) {
      for (const NamedBlob& blob : object.blobs()) {
        comm_->Broadcast(blob.bytes.data(), blob.bytes.size(), 0);
      }
    } else {
      // Small state: every rank gets every saved copy (a per-rank object
      // may be resharded from all of them) and reads its own.
      int64_t count = rank == 0 ? static_cast<int64_t>(archives[i].size()) : 0;
      comm_->Broadcast(&count, sizeof count, 0);
      std::vector<std::string> saved(static_cast<size_t>(count));
      for (int64_t k = 0; k < count; ++k) {
        saved[k] = comm_->BroadcastString(rank == 0 ? archives[i][k] : "", 0);
      }
      if (rank != 0) {
        // The chief read these very bytes as this type a moment ago.
        auto apply = object.load(saved, rank, world);
        HOLDFAST_CHECK(apply.ok(), apply.status().ToString());
        (*apply)();
      }
    }
    if (object.after_restore) object.after_restore();
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
  EraseRunLayout(&checkpoint_->counters);  // the manager's record, not the user's state
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
  last_committed_step_ = interval_start_step_ = step;
  return std::optional<int64_t>(step);
}

StatusOr<std::optional<int64_t>> CheckpointManager::RestoreOrInitialize(
    const std::function<void()>& initialize, const RestoreOptions& options) {
  StatusOr<std::optional<int64_t>> restored = RestoreLatest(options);
  if (restored.ok() && !restored->has_value() && initialize) initialize();
  return restored;
}

}  // namespace holdfast
