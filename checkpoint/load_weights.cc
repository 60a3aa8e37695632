#include "checkpoint/load_weights.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "checkpoint/names.h"
#include "checkpoint/reader.h"

namespace holdfast {
namespace {

// One checkpoint into `model`, verified whole first.
StatusOr<int64_t> LoadOne(Sequential& model, Env* env, const std::string& path) {
  HOLDFAST_ASSIGN_OR_RETURN(CheckpointContents manifest, ReadManifest(env, path));
  if (manifest.model_signature != model.Signature()) {
    return FailedPreconditionError(path + " was written for another model: it has " +
                                   manifest.model_signature + ", this model has " +
                                   model.Signature());
  }
  HOLDFAST_ASSIGN_OR_RETURN(CheckpointContents c, ReadCheckpoint(env, path));
  const auto params = c.blobs.find("params");
  std::span<float> live = model.store().params();
  if (params == c.blobs.end() || params->second.size() != live.size()) {
    return DataLossError(path + ": its params blob does not fit its own model signature");
  }
  std::copy(params->second.begin(), params->second.end(), live.begin());
  return c.step;
}

}  // namespace

StatusOr<int64_t> LoadWeights(Sequential& model, const std::string& path, Env* env) {
  if (env == nullptr) env = Env::Default();
  if (env->Exists(JoinPath(path, kManifestFile))) return LoadOne(model, env, path);
  HOLDFAST_ASSIGN_OR_RETURN(std::vector<DirectoryEntry> entries, ListCheckpoints(env, path));
  std::string damaged;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {  // newest first
    if (it->kind != DirectoryEntry::kCommitted) continue;
    StatusOr<int64_t> loaded = LoadOne(model, env, it->path);
    if (loaded.ok() || loaded.status().code() == StatusCode::kFailedPrecondition) return loaded;
    std::fprintf(stderr, "holdfast: checkpoint %s is damaged (%s); falling back\n",
                 it->path.c_str(), loaded.status().message().c_str());
    if (!damaged.empty()) damaged += "; ";
    damaged += it->name + ": " + loaded.status().message();
  }
  if (!damaged.empty())
    return DataLossError("no usable checkpoint in " + path + " (" + damaged + ")");
  return NotFoundError("no committed checkpoint in " + path);
}

}  // namespace holdfast
