#include "checkpoint/checkpoint.h"

#include <cstring>
#include <stdexcept>

namespace holdfast {
namespace {

bool IsPathWord(const std::string& word) {
  if (word.empty() || word == "." || word == "..") return false;
  for (char ch : word) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

// Whether `path` lies under `prefix` ("ema/x" under "ema", not "ema2").
bool IsUnder(const std::string& path, const std::string& prefix) {
  return path.size() > prefix.size() && path.starts_with(prefix) && path[prefix.size()] == '/';
}

void CheckPath(const std::string& path) {
  static const char* const kReserved[] = {"params",   "model",  "optimizer",
                                          "counters", "values", "holdfast"};
  for (size_t begin = 0;;) {
    const size_t end = path.find('/', begin);
    const std::string word = path.substr(begin, end == std::string::npos ? end : end - begin);
    if (!IsPathWord(word)) {
      throw std::invalid_argument("cannot track '" + path +
                                  "': a path is [A-Za-z0-9_.-] words joined by '/'");
    }
    if (begin == 0) {
      for (const char* reserved : kReserved) {
        if (word == reserved) {
          throw std::invalid_argument("cannot track '" + path + "': '" + word +
                                      "' is a reserved name");
        }
      }
    }
    if (end == std::string::npos) break;
    begin = end + 1;
  }
}

// A model's parameters under blob `blob`.
TrackedObject ModelObject(const std::string& path, const std::string& blob, Sequential* model) {
  TrackedObject o;
  o.info.path = path;
  o.info.kind = ObjectKind::kModel;
  o.info.signature = model->Signature();
  o.info.blobs = {blob};
  o.blobs = [blob, model] {
    return std::vector<NamedBlob>{{blob, std::as_writable_bytes(model->store().params())}};
  };
  return o;
}

// An optimizer's slots under blobs "<prefix>/<slot>".
std::vector<NamedBlob> SlotBlobs(const std::string& prefix, Optimizer* optimizer) {
  std::vector<NamedBlob> blobs;
  for (OptimizerSlot& slot : optimizer->slots()) {
    blobs.push_back({prefix + "/" + slot.name, std::as_writable_bytes(slot.values)});
  }
  return blobs;
}

TrackedObject OptimizerObject(const std::string& path, Optimizer* optimizer) {
  TrackedObject o;
  o.info.path = path;
  o.info.kind = ObjectKind::kOptimizer;
  o.info.signature = optimizer->Signature();
  for (const NamedBlob& b : SlotBlobs(path, optimizer)) o.info.blobs.push_back(b.name);
  return o;
}

}  // namespace

Checkpoint::Checkpoint(Sequential* model, Optimizer* optimizer)
    : model_(model), optimizer_(optimizer) {
  // The names format-2 checkpoints gave them: "params", "optimizer/<slot>".
  objects_.push_back(ModelObject("model", "params", model));
  TrackedObject o = OptimizerObject("optimizer", optimizer);
  o.blobs = [optimizer] { return SlotBlobs("optimizer", optimizer); };
  objects_.push_back(std::move(o));  // its step count is the checkpoint's step
}

void Checkpoint::Add(TrackedObject object) {
  CheckPath(object.info.path);
  const std::string& path = object.info.path;
  for (const TrackedObject& o : objects_) {
    if (o.info.path == path) {
      throw std::invalid_argument("cannot track '" + path + "': it is tracked already");
    }
    // An object's blobs are named under its path ("ema/params"): no other
    // object may live there.
    const std::string& other = o.info.path;
    if (IsUnder(path, other) || IsUnder(other, path)) {
      throw std::invalid_argument("cannot track '" + path + "': it nests with the tracked '" +
                                  other + "'");
    }
  }
  objects_.push_back(std::move(object));
}

void Checkpoint::TrackArray(const std::string& path, const char* dtype, std::span<std::byte> bytes,
                            std::vector<int64_t> shape) {
  TrackedObject o;
  o.info.path = path;
  o.info.kind = shape.empty() ? ObjectKind::kScalar : ObjectKind::kArray;
  o.info.dtype = dtype;
  o.info.shape = std::move(shape);
  o.info.blobs = {path};
  // A scalar is one value: the chief's (split word by word, a double could
  // come from two ranks).
  const Placement placement =
      o.info.kind == ObjectKind::kScalar ? Placement::kChief : Placement::kSplit;
  o.blobs = [path, bytes, placement] { return std::vector<NamedBlob>{{path, bytes, placement}}; };
  Add(std::move(o));
}

void Checkpoint::Track(const std::string& path, std::span<float> values) {
  TrackArray(path, "float32", std::as_writable_bytes(values),
             {static_cast<int64_t>(values.size())});
}

void Checkpoint::Track(const std::string& path, std::span<double> values) {
  TrackArray(path, "float64", std::as_writable_bytes(values),
             {static_cast<int64_t>(values.size())});
}

void Checkpoint::Track(const std::string& path, std::span<int64_t> values) {
  TrackArray(path, "int64", std::as_writable_bytes(values), {static_cast<int64_t>(values.size())});
}

void Checkpoint::Track(const std::string& path, double* value) {
  TrackArray(path, "float64", std::as_writable_bytes(std::span(value, 1)), {});
}

void Checkpoint::Track(const std::string& path, int64_t* value) {
  TrackArray(path, "int64", std::as_writable_bytes(std::span(value, 1)), {});
}

void Checkpoint::Track(const std::string& path, Sequential* model) {
  Add(ModelObject(path, path + "/params", model));
}

void Checkpoint::Track(const std::string& path, Optimizer* optimizer) {
  // Its step count travels as a blob of its own.
  TrackedObject o = OptimizerObject(path, optimizer);
  const std::string steps = OptimizerStepBlobName(path);
  o.info.blobs.push_back(steps);
  const size_t index = objects_.size();
  o.capture = [this, index, optimizer] {
    const int64_t n = optimizer->iterations();
    std::vector<uint32_t>& words = objects_[index].words;
    words.resize(2);
    std::memcpy(words.data(), &n, sizeof n);
  };
  o.blobs = [this, index, path, steps, optimizer] {
    std::vector<uint32_t>& words = objects_[index].words;
    words.resize(2);
    std::vector<NamedBlob> blobs = SlotBlobs(path, optimizer);
    blobs.push_back({steps, std::as_writable_bytes(std::span(words))});
    return blobs;
  };
  o.after_restore = [this, index, optimizer] {
    int64_t n = 0;
    std::memcpy(&n, objects_[index].words.data(), sizeof n);
    optimizer->set_iterations(n);
  };
  Add(std::move(o));
}

Status Checkpoint::Capture(int rank) {
  for (TrackedObject& o : objects_) {
    if (!o.capture) continue;
    const bool replicated = o.info.kind == ObjectKind::kSerializable && !o.info.per_rank;
    if (replicated && rank != 0 && !o.check_replicas) continue;
    try {
      o.capture();
    } catch (const std::exception& e) {
      return FailedPreconditionError("cannot serialize '" + o.info.path + "': " + e.what());
    }
  }
  return Status::Ok();
}

std::vector<NamedBlob> Checkpoint::Blobs() {
  std::vector<NamedBlob> blobs;
  for (TrackedObject& o : objects_) {
    for (NamedBlob& b : o.blobs()) blobs.push_back(std::move(b));
  }
  return blobs;
}

}  // namespace holdfast
