#include "checkpoint/load_weights.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "checkpoint/names.h"
#include "checkpoint/reader.h"

namespace holdfast {
namespace {

// One checkpoint, verified whole, if its model `object` is `model`'s and its
// params fit; `*blob` gets their blob's name.
StatusOr<CheckpointContents> ReadForModel(Sequential& model, const std::string& object, Env* env,
                                          const std::string& path, std::string* blob) {
  HOLDFAST_ASSIGN_OR_RETURN(CheckpointContents manifest, ReadManifest(env, path));
  const auto saved = std::find_if(manifest.objects.begin(), manifest.objects.end(),
                                  [&](const ObjectInfo& o) { return o.path == object; });
  if (saved == manifest.objects.end() || saved->kind != ObjectKind::kModel ||
      saved->blobs.size() != 1) {
    return FailedPreconditionError(path + " has no model '" + object + "'");
  }
  if (saved->signature != model.Signature()) {
    return FailedPreconditionError(path + " was written for another model: it has " +
                                   saved->signature + ", this model has " + model.Signature());
  }
  *blob = saved->blobs[0];
  HOLDFAST_ASSIGN_OR_RETURN(CheckpointContents c, ReadCheckpoint(env, path));
  const auto params = c.blobs.find(*blob);
  if (params == c.blobs.end() || params->second.size() != model.store().params().size()) {
    return DataLossError(path + ": the blob of '" + object + "' does not fit its signature");
  }
  return c;
}

}  // namespace

StatusOr<int64_t> LoadWeights(Sequential& model, const std::string& path, const std::string& object,
                              Env* env) {
  if (env == nullptr) env = Env::Default();
  std::optional<CheckpointContents> c;
  std::string blob;
  if (env->Exists(JoinPath(path, kManifestFile))) {
    HOLDFAST_ASSIGN_OR_RETURN(c, ReadForModel(model, object, env, path, &blob));
  } else {
    HOLDFAST_ASSIGN_OR_RETURN(std::vector<DirectoryEntry> entries, ListCheckpoints(env, path));
    HOLDFAST_ASSIGN_OR_RETURN(c, ReadNewestValid(entries, path, [&](const DirectoryEntry& e) {
                                return ReadForModel(model, object, env, e.path, &blob);
                              }));
    if (!c) return NotFoundError("no committed checkpoint in " + path);
  }
  const std::vector<float>& params = c->blobs.at(blob);
  std::copy(params.begin(), params.end(), model.store().params().begin());
  return c->step;
}

}  // namespace holdfast
