// Checkpoint: what a checkpoint holds (the tf.train.Checkpoint idea): objects
// tracked by path. The model and optimizer it is built with ("model",
// "optimizer"), and whatever else the program tracks: more models and
// optimizers (an EMA copy, a discriminator), float/double/int64 arrays and
// scalars, and any C++ type with a Boost.Serialization serialize() (a
// data loader's position, a schedule, a struct of the program's own), either
// replicated (the same on every rank; the chief's copy is saved) or per rank.
// Plus named integers and doubles (`counters`, `values`) for a training
// loop's position and running sums. Everything is restored bit for bit, and
// restore is strict (docs/checkpoint-state.md).
#pragma once

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/core/demangle.hpp>
#include <boost/serialization/version.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <sstream>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

#include "checkpoint/object_info.h"
#include "core/optimizer.h"
#include "core/sequential.h"
#include "core/status.h"

namespace holdfast {

// Which ranks' shards hold a blob.
enum class Placement {
  kSplit,    // 1/W of it in each writer's shard (the same on every rank)
  kChief,    // whole in the chief's shard (replicated: the chief's copy)
  kPerRank,  // each rank's own, whole in its own shard
};

// A flat buffer of the training state, by name ("params", "optimizer/m",
// "ema"): raw bytes (a whole number of 4-byte words), restored bit for bit
// and never computed on by the checkpoint code.
struct NamedBlob {
  std::string name;
  std::span<std::byte> bytes;
  Placement placement = Placement::kSplit;
};

// One tracked object: what the manifest says of it and how its bytes are
// reached. Built by Checkpoint::Track; read by the manager.
struct TrackedObject {
  ObjectInfo info;
  // Its blobs: live memory, or `words` as the last Capture left them.
  std::function<std::vector<NamedBlob>()> blobs;
  // Serializable: whether every rank's copy is hashed at save and must
  // equal the chief's (TrackOptions::check_replicas).
  bool check_replicas = false;
  // Serializable and optimizers' step count: refreshes `words` from the
  // live object, at the save step.
  std::function<void()> capture;
  std::vector<uint32_t> words;
  // Serializable: reads the saved archives (one; per rank: one per saving
  // rank) as this program's type, for `rank` of `world`, and returns what
  // assigns the result to the live object. FailedPrecondition, naming the
  // path, when they do not read; the live object is untouched either way.
  std::function<StatusOr<std::function<void()>>(const std::vector<std::string>& saved, int rank,
                                                int world)>
      load;
  // Optimizers: after their blobs were restored (their step count).
  std::function<void()> after_restore;
};

struct TrackOptions {
  // Hash every rank's copy of a replicated object at each save and refuse
  // the commit, naming the object, when one differs from the chief's (costs
  // a serialization on every rank; off, only the chief serializes).
  bool check_replicas = false;
};

// For a per-rank type: builds rank `rank` of `world`'s object from the ones
// `saved.size()` ranks saved, so that a run may resume on another world size.
template <class T>
using Reshard = std::function<T(std::vector<T> saved, int rank, int world)>;

class Checkpoint {
 public:
  // Both must outlive the Checkpoint; the model must be built and the
  // optimizer built for it. Tracked as "model" and "optimizer"; the
  // optimizer's step count is the checkpoint's step.
  Checkpoint(Sequential* model, Optimizer* optimizer);
  // Its objects' closures point at it.
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  // Tracks an object under `path`; it must outlive the Checkpoint, and an
  // array must keep its size. A path is [A-Za-z0-9_.-] words joined by '/',
  // unique, and not under the reserved names: params, model, optimizer,
  // counters, values, holdfast. std::invalid_argument otherwise.
  //
  // Arrays (split 1/W across shards, as the parameters) and scalars:
  void Track(const std::string& path, std::span<float> values);
  void Track(const std::string& path, std::span<double> values);
  void Track(const std::string& path, std::span<int64_t> values);
  void Track(const std::string& path, double* value);
  void Track(const std::string& path, int64_t* value);
  // Another model or optimizer (an EMA copy, a discriminator): its
  // parameters or slots and step count; restore checks its signature.
  void Track(const std::string& path, Sequential* model);
  void Track(const std::string& path, Optimizer* optimizer);
  // Any other type with a Boost.Serialization serialize(Archive&, unsigned
  // version) (member or free), default-constructible and move-assignable:
  // replicated, the chief's copy saved. Its class version
  // (BOOST_CLASS_VERSION) is recorded and handed to serialize() on load, so
  // a type that grew a field still reads its older checkpoints.
  template <class T>
  requires(!std::is_arithmetic_v<T> && !std::is_base_of_v<Sequential, T> &&
           !std::is_base_of_v<Optimizer, T>) void Track(const std::string& path, T* object,
                                                        TrackOptions options = {});
  // The same for state each rank holds its own of (a sampler's RNG, a
  // rank-local cache): every rank's copy is saved. A resume on another world
  // size is refused naming the path, unless `reshard` says how to build the
  // new ranks' objects.
  template <class T>
  void TrackPerRank(const std::string& path, T* object, Reshard<T> reshard = nullptr);

  // Saved and restored exactly. Keys starting with "holdfast/" are reserved
  // for holdfast's own callbacks.
  std::map<std::string, int64_t> counters;
  std::map<std::string, double> values;

  Sequential& model() { return *model_; }
  Optimizer& optimizer() { return *optimizer_; }
  int64_t step() const { return optimizer_->iterations(); }
  std::string ModelSignature() const { return model_->Signature(); }
  std::string OptimizerSignature() const { return optimizer_->Signature(); }

  // For the manager. Every tracked object, "model" and "optimizer" first.
  std::vector<TrackedObject>& objects() { return objects_; }
  // Serializes what lives in C++ objects into their blobs' buffers, at the
  // save step. `rank`: replicated objects are serialized on the chief only
  // (and on every rank when checked). An exception from a serialize() is
  // returned as an error naming the path (the save then fails).
  Status Capture(int rank);
  // Every object's blobs, in a fixed order.
  std::vector<NamedBlob> Blobs();

 private:
  void Add(TrackedObject object);
  // An array or scalar of `dtype` over `bytes`.
  void TrackArray(const std::string& path, const char* dtype, std::span<std::byte> bytes,
                  std::vector<int64_t> shape);
  template <class T>
  void TrackSerializable(const std::string& path, T* object, bool per_rank, Reshard<T> reshard,
                         TrackOptions options);

  Sequential* model_;
  Optimizer* optimizer_;
  std::vector<TrackedObject> objects_;
};

namespace internal {

template <class T>
std::string SaveArchive(const T& object) {
  std::ostringstream out;
  {
    boost::archive::binary_oarchive archive(out);
    archive << object;
  }
  return std::move(out).str();
}

template <class T>
Status LoadArchive(const std::string& bytes, const std::string& path, T* into) {
  try {
    std::istringstream in(bytes);
    boost::archive::binary_iarchive archive(in);
    archive >> *into;
  } catch (const std::exception& e) {
    return FailedPreconditionError("'" + path + "' does not read as " +
                                   boost::core::demangle(typeid(T).name()) + ": " + e.what());
  }
  return Status::Ok();
}

}  // namespace internal

template <class T>
requires(!std::is_arithmetic_v<T> && !std::is_base_of_v<Sequential, T> &&
         !std::is_base_of_v<Optimizer, T>) void Checkpoint::Track(const std::string& path,
                                                                  T* object, TrackOptions options) {
  TrackSerializable<T>(path, object, /*per_rank=*/false, nullptr, options);
}

template <class T>
void Checkpoint::TrackPerRank(const std::string& path, T* object, Reshard<T> reshard) {
  TrackSerializable<T>(path, object, /*per_rank=*/true, std::move(reshard), {});
}

template <class T>
void Checkpoint::TrackSerializable(const std::string& path, T* object, bool per_rank,
                                   Reshard<T> reshard, TrackOptions options) {
  TrackedObject o;
  o.info.path = path;
  o.info.kind = ObjectKind::kSerializable;
  o.info.type = boost::core::demangle(typeid(T).name());
  o.info.class_version = boost::serialization::version<T>::value;
  o.info.per_rank = per_rank;
  o.info.blobs = {path};
  o.check_replicas = options.check_replicas;
  // `words` lives in objects_, whose elements may move: the closures find
  // it by index.
  const size_t index = objects_.size();
  o.capture = [this, index, object] {
    objects_[index].words = PackBytes(internal::SaveArchive(std::as_const(*object)));
  };
  o.blobs = [this, index, path, per_rank] {
    std::vector<uint32_t>& words = objects_[index].words;
    return std::vector<NamedBlob>{{path, std::as_writable_bytes(std::span(words)),
                                   per_rank ? Placement::kPerRank : Placement::kChief}};
  };
  o.load = [path, object, per_rank, reshard](const std::vector<std::string>& saved, int rank,
                                             int world) -> StatusOr<std::function<void()>> {
    if (saved.empty() || (!per_rank && saved.size() != 1)) {
      return DataLossError("'" + path + "' has " + std::to_string(saved.size()) + " archives");
    }
    std::vector<T> read(saved.size());
    for (size_t i = 0; i < saved.size(); ++i) {
      HOLDFAST_RETURN_IF_ERROR(internal::LoadArchive(saved[i], path, &read[i]));
    }
    std::shared_ptr<T> fresh;
    if (per_rank && static_cast<int>(saved.size()) != world) {
      if (!reshard) {
        return FailedPreconditionError("'" + path + "' is per-rank state saved by " +
                                       std::to_string(saved.size()) + " ranks; this run has " +
                                       std::to_string(world) +
                                       " (give TrackPerRank a reshard function)");
      }
      try {
        fresh = std::make_shared<T>(reshard(std::move(read), rank, world));
      } catch (const std::exception& e) {
        return FailedPreconditionError("cannot reshard '" + path + "' to rank " +
                                       std::to_string(rank) + " of " + std::to_string(world) +
                                       ": " + e.what());
      }
    } else {
      fresh = std::make_shared<T>(std::move(read[per_rank ? static_cast<size_t>(rank) : 0]));
    }
    return std::function<void()>([object, fresh] { *object = std::move(*fresh); });
  };
  Add(std::move(o));
}

}  // namespace holdfast
