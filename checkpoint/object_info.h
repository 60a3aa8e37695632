// ObjectInfo: what a checkpoint says about one tracked object (the
// manifest's "objects" list; docs/checkpoint-state.md). The writer
// (Checkpoint::Track) and the readers (restore's strict check, `holdfast ckpt
// inspect|get`) share this one description.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace holdfast {

enum class ObjectKind { kModel, kOptimizer, kArray, kScalar, kSerializable };

struct ObjectInfo {
  std::string path;  // "model", "ema", "student/optimizer", "loader"
  ObjectKind kind = ObjectKind::kArray;
  std::string dtype;           // arrays and scalars: "float32", "float64", "int64"
  std::vector<int64_t> shape;  // arrays: {n}; scalars: {}
  std::string signature;       // models and optimizers: what they must match to restore
  std::string type;            // serializable: the C++ type, for people (never compared)
  uint32_t class_version = 0;  // serializable: Boost.Serialization's class version
  bool per_rank = false;       // serializable: each rank's own (else the chief's copy)
  int world = 0;               // per-rank: how many ranks saved one (set by the manifest)
  // The blobs holding it, by name; a per-rank object's are "<path>@<rank>".
  std::vector<std::string> blobs;
};

const char* KindName(ObjectKind kind);
// "float32[4410]", "int64", "serializable LoaderState v2", "model <signature>",
// "per-rank serializable ... (3 ranks)".
std::string Describe(const ObjectInfo& info);
// Whether a saved object can be restored into a tracked one: same kind, dtype,
// shape and signature, and a class version no newer than the tracked type's.
// Empty when it can; else why not, for one line ("float32[7] saved, float32[5] here").
std::string Mismatch(const ObjectInfo& saved, const ObjectInfo& tracked);

nlohmann::json ObjectToJson(const ObjectInfo& info);
// DataLoss when the entry is malformed.
StatusOr<ObjectInfo> ObjectFromJson(const nlohmann::json& entry);

// Whether a manifest's objects fit its blobs (name -> 4-byte words): unique
// paths, every blob listed and owned by one object, one blob for every
// object but optimizers and per-rank ones, a known dtype, and an array's or
// scalar's blob exactly its values. DataLoss naming the first misfit.
Status CheckObjects(const std::vector<ObjectInfo>& objects,
                    const std::map<std::string, uint64_t>& blob_words);

// The name of rank `rank`'s blob of per-rank object `path`. '@' is never in a path.
std::string PerRankBlobName(const std::string& path, int rank);
// The blob that holds the step count of an optimizer tracked at `path`
// beside the main one (an int64; the slots are float32).
std::string OptimizerStepBlobName(const std::string& path);
// What blob `blob` of `object` holds: "float32", "float64" or "int64"
// values, or "bytes" (a serialized object's packed archive).
std::string BlobDtype(const ObjectInfo& object, const std::string& blob);

// A serializable object's bytes travel in a blob of 4-byte words: their
// length (8 bytes, little-endian), the bytes, then zero padding.
std::vector<uint32_t> PackBytes(std::string_view bytes);
// The bytes of a packed blob; DataLoss when its length does not fit.
StatusOr<std::string> UnpackBytes(std::span<const std::byte> words);

}  // namespace holdfast
