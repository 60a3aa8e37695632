#include "checkpoint/object_info.h"

#include <cstring>
#include <set>

namespace holdfast {
namespace {

using nlohmann::json;

constexpr ObjectKind kKinds[] = {ObjectKind::kModel, ObjectKind::kOptimizer, ObjectKind::kArray,
                                 ObjectKind::kScalar, ObjectKind::kSerializable};

std::string ShapeText(const ObjectInfo& info) {
  std::string text = info.dtype;
  // (append, not "[" + ...: GCC 12 warns falsely on the latter, bug 105651)
  for (int64_t d : info.shape) text.append("[").append(std::to_string(d)).append("]");
  return text;
}

}  // namespace

const char* KindName(ObjectKind kind) {
  switch (kind) {
    case ObjectKind::kModel:
      return "model";
    case ObjectKind::kOptimizer:
      return "optimizer";
    case ObjectKind::kArray:
      return "array";
    case ObjectKind::kScalar:
      return "scalar";
    case ObjectKind::kSerializable:
      return "serializable";
  }
  return "?";
}

std::string Describe(const ObjectInfo& info) {
  switch (info.kind) {
    case ObjectKind::kModel:
    case ObjectKind::kOptimizer:
      return std::string(KindName(info.kind)) + " " + info.signature;
    case ObjectKind::kArray:
    case ObjectKind::kScalar:
      return ShapeText(info);
    case ObjectKind::kSerializable: {
      std::string text = info.per_rank ? "per-rank " : "";
      text += "serializable " + info.type + " v" + std::to_string(info.class_version);
      if (info.per_rank && info.world > 0) text += " (" + std::to_string(info.world) + " ranks)";
      return text;
    }
  }
  return "?";
}

std::string Mismatch(const ObjectInfo& saved, const ObjectInfo& tracked) {
  if (saved.kind != tracked.kind || saved.per_rank != tracked.per_rank) {
    return Describe(saved) + " saved, " + Describe(tracked) + " here";
  }
  switch (saved.kind) {
    case ObjectKind::kModel:
    case ObjectKind::kOptimizer:
      if (saved.signature == tracked.signature) return "";
      break;
    case ObjectKind::kArray:
    case ObjectKind::kScalar:
      if (saved.dtype == tracked.dtype && saved.shape == tracked.shape) return "";
      break;
    case ObjectKind::kSerializable:
      // An older version is what class versions are for; a newer one would
      // hand this program's serialize() a version it has never seen.
      if (saved.class_version <= tracked.class_version) return "";
      return "class version " + std::to_string(saved.class_version) + " saved, " +
             std::to_string(tracked.class_version) + " here";
  }
  return Describe(saved) + " saved, " + Describe(tracked) + " here";
}

json ObjectToJson(const ObjectInfo& info) {
  json entry = {{"path", info.path}, {"kind", KindName(info.kind)}, {"blobs", info.blobs}};
  switch (info.kind) {
    case ObjectKind::kModel:
    case ObjectKind::kOptimizer:
      entry["signature"] = info.signature;
      break;
    case ObjectKind::kArray:
    case ObjectKind::kScalar:
      entry["dtype"] = info.dtype;
      entry["shape"] = info.shape;
      break;
    case ObjectKind::kSerializable:
      entry["type"] = info.type;
      entry["class_version"] = info.class_version;
      entry["per_rank"] = info.per_rank;
      if (info.per_rank) entry["world"] = info.world;
      break;
  }
  return entry;
}

StatusOr<ObjectInfo> ObjectFromJson(const json& entry) {
  ObjectInfo info;
  try {
    info.path = entry.at("path").get<std::string>();
    const std::string kind = entry.at("kind").get<std::string>();
    bool known = false;
    for (ObjectKind k : kKinds) {
      if (kind == KindName(k)) {
        info.kind = k;
        known = true;
      }
    }
    if (!known) return DataLossError("object " + info.path + " of unknown kind " + kind);
    info.blobs = entry.at("blobs").get<std::vector<std::string>>();
    info.signature = entry.value("signature", "");
    info.dtype = entry.value("dtype", "");
    if (entry.contains("shape")) info.shape = entry.at("shape").get<std::vector<int64_t>>();
    info.type = entry.value("type", "");
    info.class_version = entry.value("class_version", 0u);
    info.per_rank = entry.value("per_rank", false);
    info.world = entry.value("world", 0);
  } catch (const json::exception& e) {
    return DataLossError(std::string("malformed object entry: ") + e.what());
  }
  if (info.per_rank && (info.world < 1 || info.blobs.size() != static_cast<size_t>(info.world))) {
    return DataLossError("per-rank object " + info.path + " lists " +
                         std::to_string(info.blobs.size()) + " blobs for " +
                         std::to_string(info.world) + " ranks");
  }
  return info;
}

Status CheckObjects(const std::vector<ObjectInfo>& objects,
                    const std::map<std::string, uint64_t>& blob_words) {
  std::set<std::string> paths, owned;
  for (const ObjectInfo& o : objects) {
    if (!paths.insert(o.path).second) return DataLossError("object " + o.path + " listed twice");
    for (const std::string& blob : o.blobs) {
      if (!blob_words.contains(blob)) {
        return DataLossError("object " + o.path + " is in a blob the manifest lacks: " + blob);
      }
      if (!owned.insert(blob).second) {
        return DataLossError("blob " + blob + " belongs to two objects");
      }
    }
    const bool one_blob = o.kind != ObjectKind::kOptimizer && !o.per_rank;
    if (one_blob && o.blobs.size() != 1) {
      return DataLossError("object " + o.path + " lists " + std::to_string(o.blobs.size()) +
                           " blobs");
    }
    if (o.kind != ObjectKind::kArray && o.kind != ObjectKind::kScalar) continue;
    const uint64_t value_bytes = o.dtype == "float32"                         ? 4
                                 : o.dtype == "float64" || o.dtype == "int64" ? 8
                                                                              : 0;
    const bool shape_ok =
        o.kind == ObjectKind::kScalar ? o.shape.empty() : o.shape.size() == 1 && o.shape[0] >= 0;
    const uint64_t values =
        o.kind == ObjectKind::kScalar ? 1 : static_cast<uint64_t>(shape_ok ? o.shape[0] : 0);
    if (value_bytes == 0 || !shape_ok || values > blob_words.at(o.blobs[0]) * 4 / value_bytes ||
        values * value_bytes != blob_words.at(o.blobs[0]) * 4) {
      return DataLossError("object " + o.path + " (" + Describe(o) + ") does not fit its blob");
    }
  }
  return Status::Ok();
}

std::string OptimizerStepBlobName(const std::string& path) { return path + "/iterations"; }

std::string BlobDtype(const ObjectInfo& object, const std::string& blob) {
  switch (object.kind) {
    case ObjectKind::kModel:
      return "float32";
    case ObjectKind::kOptimizer:
      return blob == OptimizerStepBlobName(object.path) ? "int64" : "float32";
    case ObjectKind::kArray:
    case ObjectKind::kScalar:
      return object.dtype;
    case ObjectKind::kSerializable:
      return "bytes";
  }
  return "bytes";
}

std::string PerRankBlobName(const std::string& path, int rank) {
  return path + "@" + std::to_string(rank);
}

std::vector<uint32_t> PackBytes(std::string_view bytes) {
  const uint64_t length = bytes.size();
  std::vector<uint32_t> words(2 + (bytes.size() + 3) / 4, 0);
  std::memcpy(words.data(), &length, sizeof length);
  if (!bytes.empty()) std::memcpy(words.data() + 2, bytes.data(), bytes.size());
  return words;
}

StatusOr<std::string> UnpackBytes(std::span<const std::byte> words) {
  uint64_t length = 0;
  if (words.size() < sizeof length) return DataLossError("a packed object has no length");
  std::memcpy(&length, words.data(), sizeof length);
  if (length > words.size() - sizeof length) {
    return DataLossError("a packed object claims " + std::to_string(length) + " bytes in " +
                         std::to_string(words.size() - sizeof length));
  }
  return std::string(reinterpret_cast<const char*>(words.data()) + sizeof length, length);
}

}  // namespace holdfast
