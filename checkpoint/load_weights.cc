#include "checkpoint/load_weights.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "checkpoint/names.h"
#include "checkpoint/reader.h"

namespace holdfast {
namespace {

// One checkpoint, verified whole, if its model `object` is `model`'s: its
// parameters are copied into `model` once all verified; every other blob is
// verified and dropped.
StatusOr<CheckpointContents> ReadIntoModel(Sequential& model, const std::string& object, Env* env,
                                           const std::string& path) {
  HOLDFAST_ASSIGN_OR_RETURN(CheckpointContents manifest, ReadManifest(env, path));
  const auto saved = std::find_if(manifest.objects.begin(), manifest.objects.end(),
                                  [&](const ObjectInfo& o) { return o.path == object; });
  if (saved == manifest.objects.end() || saved->kind != ObjectKind::kModel) {
    return FailedPreconditionError(path + " has no model '" + object + "'");
  }
  if (saved->signature != model.Signature()) {
    return FailedPreconditionError(path + " was written for another model: it has " +
                                   saved->signature + ", this model has " + model.Signature());
  }
  ReadTargets targets;
  targets.live.emplace(saved->blobs.at(0), std::as_writable_bytes(model.store().params()));
  for (const auto& [blob, words] : manifest.blob_floats) {
    if (blob != saved->blobs[0]) targets.skip.insert(blob);
  }
  auto c = ReadCheckpoint(env, path, &targets);
  // Its own signature's size, else the manifest contradicts itself.
  if (c.status().code() == StatusCode::kFailedPrecondition) {
    return DataLossError(path + ": the blob of '" + object + "' does not fit its signature");
  }
  return c;
}

}  // namespace

StatusOr<int64_t> LoadWeights(Sequential& model, const std::string& path, const std::string& object,
                              Env* env) {
  if (env == nullptr) env = Env::Default();
  std::optional<CheckpointContents> c;
  if (env->Exists(JoinPath(path, kManifestFile))) {
    HOLDFAST_ASSIGN_OR_RETURN(c, ReadIntoModel(model, object, env, path));
  } else {
    HOLDFAST_ASSIGN_OR_RETURN(std::vector<DirectoryEntry> entries, ListCheckpoints(env, path));
    HOLDFAST_ASSIGN_OR_RETURN(c, ReadNewestValid(entries, path, [&](const DirectoryEntry& e) {
                                return ReadIntoModel(model, object, env, e.path);
                              }));
    if (!c) return NotFoundError("no committed checkpoint in " + path);
  }
  return c->step;
}

}  // namespace holdfast
