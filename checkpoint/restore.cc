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

}  // namespace

StatusOr<std::optional<int64_t>> CheckpointManager::RestoreLatest() {
  HOLDFAST_RETURN_IF_ERROR(OpenDirectory());
  (void)WaitForSave();  // its outcome is on disk for the chief to find
  const std::string& dir = options_.directory;
  std::optional<CheckpointContents> chosen;
  Status status = Status::Ok();
  if (comm_->rank() == 0 && env_->Exists(dir)) {
    auto entries = ListCheckpoints(env_, dir);
    if (!entries.ok()) {
      status = entries.status();
    } else {
      BlobDestinations live;
      for (const NamedBlob& blob : checkpoint_->Blobs()) live.emplace(blob.name, blob.values);
      for (const DirectoryEntry& e : *entries) {
        // An interrupted save: never committed, never read.
        if (e.kind == DirectoryEntry::kPrepareArea) (void)RemoveTree(env_, e.path);
      }
      auto read = [&](const DirectoryEntry& e) -> StatusOr<CheckpointContents> {
        // The manifest alone tells whether it belongs to this model; then
        // the shards are read straight into the live state, which is
        // written only once the whole checkpoint has been verified.
        auto loaded = ReadManifest(env_, e.path);
        if (loaded.ok()) {
          Status fits = CheckFitsLiveState(*loaded, *checkpoint_);
          std::string warning;
          if (fits.ok() && Layout() != nullptr) {
            fits = CheckRunLayout(loaded->counters, loaded->world_size, *Layout(),
                                  omp_get_max_threads(), comm_->size(), &warning);
          }
          if (!fits.ok()) loaded = fits;
          if (!warning.empty()) {
            std::fprintf(stderr, "holdfast: warning: checkpoint %s: %s\n", e.path.c_str(),
                         warning.c_str());
          }
        }
        if (loaded.ok()) loaded = ReadCheckpoint(env_, e.path, &live);
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
  if (comm_->rank() == 0) {
    if (const char* report = std::getenv(kRestoreReportEnv); report != nullptr && *report) {
      (void)AtomicWriteFile(env_, report,
                            chosen ? "step " + std::to_string(chosen->step) + "\n" : "none\n");
    }
  }
  if (found == 0) {
    // A fresh start: checkpoint_interval counts from here.
    interval_start_step_ = checkpoint_->step();
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
    const std::function<void()>& initialize) {
  StatusOr<std::optional<int64_t>> restored = RestoreLatest();
  if (restored.ok() && !restored->has_value() && initialize) initialize();
  return restored;
}

}  // namespace holdfast
