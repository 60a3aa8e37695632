#include "checkpoint/load_weights.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "checkpoint/names.h"
#include "checkpoint/reader.h"

namespace holdfast {
namespace {

// One checkpoint, verified whole, if it is `model`'s and its params fit.
StatusOr<CheckpointContents> ReadForModel(Sequential& model, Env* env, const std::string& path) {
  HOLDFAST_ASSIGN_OR_RETURN(CheckpointContents manifest, ReadManifest(env, path));
  if (manifest.model_signature != model.Signature()) {
    return FailedPreconditionError(path + " was written for another model: it has " +
                                   manifest.model_signature + ", this model has " +
                                   model.Signature());
  }
  HOLDFAST_ASSIGN_OR_RETURN(CheckpointContents c, ReadCheckpoint(env, path));
  const auto params = c.blobs.find("params");
  if (params == c.blobs.end() || params->second.size() != model.store().params().size()) {
    return DataLossError(path + ": its params blob does not fit its own model signature");
  }
  return c;
}

}  // namespace

StatusOr<int64_t> LoadWeights(Sequential& model, const std::string& path, Env* env) {
  if (env == nullptr) env = Env::Default();
  std::optional<CheckpointContents> c;
  if (env->Exists(JoinPath(path, kManifestFile))) {
    HOLDFAST_ASSIGN_OR_RETURN(c, ReadForModel(model, env, path));
  } else {
    HOLDFAST_ASSIGN_OR_RETURN(std::vector<DirectoryEntry> entries, ListCheckpoints(env, path));
    HOLDFAST_ASSIGN_OR_RETURN(c, ReadNewestValid(entries, path, [&](const DirectoryEntry& e) {
                                return ReadForModel(model, env, e.path);
                              }));
    if (!c) return NotFoundError("no committed checkpoint in " + path);
  }
  const std::vector<float>& params = c->blobs.at("params");
  std::copy(params.begin(), params.end(), model.store().params().begin());
  return c->step;
}

}  // namespace holdfast
