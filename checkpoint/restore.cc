// CheckpointManager, restore: the newest valid checkpoint, falling back past
// damaged ones, read by every rank in parallel (docs/parallel-restore.md).
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "checkpoint/internal/manager_internal.h"
#include "checkpoint/internal/manifest.h"
#include "checkpoint/internal/parallel_read.h"
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
StatusOr<std::vector<std::string>> SavedArchives(
    const std::map<std::string, std::vector<float>>& blobs, const ObjectInfo& saved) {
  std::vector<std::string> archives;
  for (const std::string& blob : saved.blobs) {
    const auto staged = blobs.find(blob);
    if (staged == blobs.end())
      return DataLossError(saved.path + ": its blob " + blob + " was not read");
    auto bytes = UnpackBytes(std::as_bytes(std::span(staged->second)));
    if (!bytes.ok()) return bytes.status().WithContext(saved.path);
    archives.push_back(std::move(*bytes));
  }
  return archives;
}

json PlanToJson(const RestorePlan& plan) {
  return {{"restored", plan.restored}, {"fresh", plan.fresh}, {"ignored", plan.ignored}};
}

RestorePlan PlanFromJson(const json& j) {
  RestorePlan plan;
  plan.restored = j.at("restored").get<std::vector<size_t>>();
  plan.fresh = j.at("fresh").get<std::vector<std::string>>();
  plan.ignored = j.at("ignored").get<std::vector<std::string>>();
  return plan;
}

// The blobs a plan copies into live memory: those of its restored objects,
// serializable ones aside (those are assigned).
std::vector<NamedBlob> LiveBlobs(std::vector<TrackedObject>& objects, const RestorePlan& plan) {
  std::vector<NamedBlob> live;
  for (size_t i : plan.restored) {
    if (objects[i].info.kind == ObjectKind::kSerializable) continue;
    for (NamedBlob& blob : objects[i].blobs()) live.push_back(std::move(blob));
  }
  return live;
}

// One outcome for every rank: the first error in rank order, or OK.
Status Agree(Communicator& comm, const Status& mine) {
  Status first = Status::Ok();
  for (const Status& s : comm.GatherStatus(mine, 0)) {
    if (!s.ok()) {
      first = s;
      break;
    }
  }
  return comm.BroadcastStatus(first, 0);
}

// Every rank reads its share of a checkpoint whose manifest records the
// layout, and the ranks then assemble the whole state on each
// (docs/parallel-restore.md). Collective: every call on every rank.
class ParallelRestore {
 public:
  ParallelRestore(Env* env, Communicator* comm, std::vector<TrackedObject>& objects,
                  bool chief_reads_all, bool undo_on_failure, size_t gather_piece_bytes)
      : env_(env),
        comm_(comm),
        objects_(objects),
        chief_reads_all_(chief_reads_all),
        undo_(undo_on_failure),
        gather_piece_(gather_piece_bytes) {}

  // Reads checkpoint `c` (at `path`) on every rank: its small state,
  // checked and read as its types before any live byte changes, then the
  // rest straight into the live arrays, which the ranks all-gather as it
  // comes in; returns the verdict every rank agrees on (DataLoss for damage
  // anywhere).
  Status Read(const CheckpointContents& c, const std::string& path, const RestorePlan& plan) {
    const int rank = comm_->rank(), world = comm_->size();
    shares_ = internal::ShareOut(c, world, chief_reads_all_);
    const std::span<const internal::Extent> mine = shares_[static_cast<size_t>(rank)];
    staged_.clear();
    assign_.clear();
    internal::BlobMemory staging;
    const std::set<std::string> small = internal::SmallBlobs(c);
    for (const auto& [name, floats] : c.blob_floats) {
      if (!small.contains(name)) continue;
      std::vector<float>& words = staged_[name];
      words.resize(floats);
      staging[name] = std::as_writable_bytes(std::span(words));
    }
    HOLDFAST_RETURN_IF_ERROR(
        Agree(*comm_, internal::ReadSmallSlices(env_, path, c, mine, staging)));
    ShareSmallSlices(c, staging);
    // Every rank reads its user objects as their types (a per-rank one
    // resharded for it) before anything live changes.
    std::map<std::string, const ObjectInfo*> saved;
    for (const ObjectInfo& info : c.objects) saved.emplace(info.path, &info);
    Status loaded = Status::Ok();
    for (size_t i : plan.restored) {
      if (objects_[i].info.kind != ObjectKind::kSerializable) continue;
      auto archives = SavedArchives(staged_, *saved.at(objects_[i].info.path));
      auto apply = archives.ok() ? objects_[i].load(*archives, rank, world)
                                 : StatusOr<std::function<void()>>(archives.status());
      if (!apply.ok()) {
        loaded = apply.status();
        break;
      }
      assign_.push_back(std::move(*apply));
    }
    HOLDFAST_RETURN_IF_ERROR(Agree(*comm_, loaded));

    internal::BlobMemory live;
    for (const NamedBlob& blob : LiveBlobs(objects_, plan)) {
      if (!staged_.contains(blob.name)) live[blob.name] = blob.bytes;
    }
    if (undo_ && !kept_) KeepLiveState();
    const StatusOr<internal::ShareRead> read = ReadAndGather(c, path, mine, live, staging);
    // The chief forms every shard's checksum from the ranks' chunk digests.
    const std::vector<Status> statuses = comm_->GatherStatus(read.status(), 0);
    const std::vector<std::string> reports = comm_->Gather(read.ok() ? read->Encode() : "", 0);
    Status verdict = Status::Ok();
    if (rank == 0) {
      std::vector<internal::ShareRead> reads;
      for (size_t r = 0; r < statuses.size() && verdict.ok(); ++r) {
        verdict = statuses[r];
        if (!verdict.ok()) break;
        auto decoded = internal::ShareRead::Decode(reports[r]);
        if (!decoded.ok()) {
          verdict = decoded.status();
          break;
        }
        if (decoded->values) values_ = *decoded->values;
        reads.push_back(std::move(*decoded));
      }
      if (verdict.ok()) verdict = internal::CheckChecksums(c, reads);
    }
    verdict = comm_->BroadcastStatus(verdict, 0);
    if (!verdict.ok()) {
      for (const auto& [name, bytes] : live) damaged_writes_.insert(name);
    }
    return verdict;
  }

  // After a Read that succeeded (which gave every rank the whole arrays):
  // the small blobs are copied in and user objects assigned.
  void Assemble(const RestorePlan& plan) {
    for (const NamedBlob& blob : LiveBlobs(objects_, plan)) {
      const auto staged = staged_.find(blob.name);
      if (staged != staged_.end()) {
        std::memcpy(blob.bytes.data(), staged->second.data(), blob.bytes.size());
      }
    }
    for (const std::function<void()>& apply : assign_) apply();
  }

  // The chief's: the values of the checkpoint the last Read verified.
  const std::map<std::string, double>& values() const { return values_; }

  // A damaged checkpoint's bytes may sit in live arrays that the one
  // restored instead does not overwrite (an allow_missing object it lacks):
  // they get their values from before (undo_on_failure) or the restore fails.
  Status CheckOverwritten(const RestorePlan& plan) {
    std::set<std::string> left = damaged_writes_;
    for (const NamedBlob& blob : LiveBlobs(objects_, plan)) left.erase(blob.name);
    if (left.empty()) return Status::Ok();
    if (kept_) {
      Undo(&left);
      return Status::Ok();
    }
    std::string names;
    for (const std::string& name : left) names += (names.empty() ? "" : ", ") + name;
    return DataLossError("a damaged checkpoint was read into " + names +
                         ", which the checkpoint restored instead does not hold: they are lost "
                         "(RestoreOptions::undo_on_failure keeps the values from before)");
  }

  // Puts back the live state (only the blobs in `only`, if given) as it
  // was before the first read, if kept.
  void Undo(const std::set<std::string>* only = nullptr) {
    if (!kept_) return;
    for (size_t i = 0; i < objects_.size(); ++i) {
      if (objects_[i].info.kind == ObjectKind::kSerializable) continue;
      for (const NamedBlob& blob : objects_[i].blobs()) {
        if (only != nullptr && !only->contains(blob.name)) continue;
        const std::vector<std::byte>& before = kept_state_.at(blob.name);
        std::memcpy(blob.bytes.data(), before.data(), before.size());
      }
    }
  }

 private:
  void KeepLiveState() {
    for (TrackedObject& object : objects_) {
      if (object.info.kind == ObjectKind::kSerializable) continue;
      for (const NamedBlob& blob : object.blobs()) {
        kept_state_[blob.name].assign(blob.bytes.begin(), blob.bytes.end());
      }
    }
    kept_ = true;
  }

  // Reads this rank's share into the live arrays while the parts already
  // in go to every rank, piece by piece: from a cold cache the reads wait
  // for the disk, and the all-gathers use that time. They run on a thread
  // of their own (MPI_THREAD_SERIALIZED allows it: this thread makes no MPI
  // call until that one has ended). Every rank makes the same all-gathers
  // in the same order whatever its read does: a read that fails ends early,
  // what it did not read is sent as it is, and the verdict throws it away.
  StatusOr<internal::ShareRead> ReadAndGather(const CheckpointContents& c, const std::string& path,
                                              std::span<const internal::Extent> mine,
                                              const internal::BlobMemory& live,
                                              const internal::BlobMemory& small) {
    const bool hash_on_another_thread = omp_get_max_threads() > 1;
    auto read_share = [&](internal::ReadProgress* progress) {
      return internal::ReadShare(env_, path, c, mine, live, small, hash_on_another_thread,
                                 progress);
    };
    if (comm_->size() == 1) return read_share(nullptr);
    const std::vector<GatherRound> rounds = GatherRounds(c, live);
    internal::ReadProgress progress;
    std::exception_ptr gather_failed;
    std::jthread gatherer([&] {
      try {
        Gather(rounds, live, progress);
      } catch (...) {  // a collective that threw (in-process ranks): thrown here
        gather_failed = std::current_exception();
      }
    });
    StatusOr<internal::ShareRead> read = [&] {
      struct Finish {  // however the read ends, the all-gathers go on
        internal::ReadProgress& progress;
        ~Finish() { progress.Finish(); }
      } finish{progress};
      return read_share(&progress);
    }();
    gatherer.join();
    if (gather_failed) std::rethrow_exception(gather_failed);
    return read;
  }

  // One all-gather of ReadAndGather: the k-th piece of every rank's part of
  // a blob, once `needs` bytes of this rank's part of it are in.
  struct GatherRound {
    std::string blob;
    std::vector<Communicator::Part> parts;
    uint64_t needs = 0;
  };

  // Blob by blob in the order the shards hold them, each rank's part cut
  // into pieces of gather_piece_ bytes (RestoreOptions::gather_piece_bytes).
  std::vector<GatherRound> GatherRounds(const CheckpointContents& c,
                                        const internal::BlobMemory& live) const {
    std::vector<std::string> order;
    std::set<std::string> seen;
    for (const ShardInfo& shard : c.shards) {
      for (const SliceInfo& slice : shard.slices) {
        if (live.contains(slice.blob) && seen.insert(slice.blob).second) {
          order.push_back(slice.blob);
        }
      }
    }
    const size_t rank = static_cast<size_t>(comm_->rank());
    std::vector<GatherRound> rounds;
    for (const std::string& name : order) {
      const std::vector<size_t> offsets = internal::BlobParts(c, shares_, name);
      size_t longest = 0;
      for (size_t r = 0; r + 1 < offsets.size(); ++r) {
        longest = std::max(longest, offsets[r + 1] - offsets[r]);
      }
      for (size_t done = 0; done < longest; done += gather_piece_) {
        GatherRound round{name, {}, 0};
        for (size_t r = 0; r + 1 < offsets.size(); ++r) {
          const size_t length = offsets[r + 1] - offsets[r];
          const size_t a = std::min(done, length), b = std::min(done + gather_piece_, length);
          round.parts.push_back({offsets[r] + a, b - a});
        }
        round.needs = std::min(done + gather_piece_, offsets[rank + 1] - offsets[rank]);
        rounds.push_back(std::move(round));
      }
    }
    return rounds;
  }

  // Makes the all-gathers, each once `progress` says this rank's piece is in.
  void Gather(const std::vector<GatherRound>& rounds, const internal::BlobMemory& live,
              internal::ReadProgress& progress) {
    for (const GatherRound& round : rounds) {
      progress.WaitFor(round.blob, round.needs);
      comm_->AllGather(live.at(round.blob).data(), round.parts);
    }
  }

  // Every rank's small slices reach every rank in one all-gather: packed
  // by reader rank (then shard and slice order), so that each rank's part
  // is contiguous, whatever the number of per-rank objects.
  void ShareSmallSlices(const CheckpointContents& c, const internal::BlobMemory& staging) {
    struct Piece {
      std::byte* at;
      size_t bytes;
    };
    std::vector<std::vector<Piece>> by_reader(static_cast<size_t>(comm_->size()));
    for (size_t s = 0; s < c.shards.size(); ++s) {
      for (const SliceInfo& slice : c.shards[s].slices) {
        const int reader = slice.xxh3.empty() ? -1 : internal::SmallSliceReader(shares_, s, slice);
        if (reader < 0) continue;
        by_reader[static_cast<size_t>(reader)].push_back(
            {staging.at(slice.blob).data() + slice.offset * sizeof(float),
             slice.count * sizeof(float)});
      }
    }
    std::vector<size_t> parts = {0};
    for (const std::vector<Piece>& pieces : by_reader) {
      size_t bytes = 0;
      for (const Piece& p : pieces) bytes += p.bytes;
      parts.push_back(parts.back() + bytes);
    }
    if (parts.back() == 0) return;
    std::vector<std::byte> packed(parts.back());
    const size_t mine = static_cast<size_t>(comm_->rank());
    size_t at = parts[mine];
    for (const Piece& p : by_reader[mine]) {
      std::memcpy(packed.data() + at, p.at, p.bytes);
      at += p.bytes;
    }
    comm_->AllGather(packed.data(), Communicator::Consecutive(parts));
    at = 0;
    for (const std::vector<Piece>& pieces : by_reader) {
      for (const Piece& p : pieces) {
        std::memcpy(p.at, packed.data() + at, p.bytes);
        at += p.bytes;
      }
    }
  }

  Env* const env_;
  Communicator* const comm_;
  std::vector<TrackedObject>& objects_;
  const bool chief_reads_all_, undo_;
  const size_t gather_piece_;
  internal::Shares shares_;
  // Every small blob of the checkpoint last read, on every rank.
  std::map<std::string, std::vector<float>> staged_;
  std::vector<std::function<void()>> assign_;  // this rank's user objects
  std::map<std::string, double> values_;
  std::set<std::string> damaged_writes_;  // live blobs a damaged checkpoint was read into
  bool kept_ = false;
  std::map<std::string, std::vector<std::byte>> kept_state_;
};

// Reads a checkpoint written before manifests recorded the layout, the old
// way: the chief alone reads it whole into the live state, which it writes
// only once all is verified and every serializable object has read as its
// type; the archives of those and what assigns them are returned.
StatusOr<CheckpointContents> ReadByChief(Env* env, const CheckpointContents& manifest,
                                         const std::string& path, const RestorePlan& plan,
                                         std::vector<TrackedObject>& objects, int world,
                                         std::map<size_t, std::vector<std::string>>* archives,
                                         std::vector<std::function<void()>>* assign) {
  std::map<std::string, const ObjectInfo*> saved;
  for (const ObjectInfo& info : manifest.objects) saved.emplace(info.path, &info);
  ReadTargets targets;
  for (size_t i : plan.restored) {
    if (objects[i].info.kind == ObjectKind::kSerializable) continue;
    for (const NamedBlob& blob : objects[i].blobs()) targets.live[blob.name] = blob.bytes;
  }
  for (const std::string& p : plan.ignored) {  // expect_partial: verified, not kept
    for (const std::string& blob : saved.at(p)->blobs) targets.skip.insert(blob);
  }
  archives->clear();
  assign->clear();
  targets.before_live = [&](const CheckpointContents& c) -> Status {
    for (size_t i : plan.restored) {
      if (objects[i].info.kind != ObjectKind::kSerializable) continue;
      HOLDFAST_ASSIGN_OR_RETURN((*archives)[i],
                                SavedArchives(c.blobs, *saved.at(objects[i].info.path)));
      HOLDFAST_ASSIGN_OR_RETURN(std::function<void()> apply,
                                objects[i].load((*archives)[i], /*rank=*/0, world));
      assign->push_back(std::move(apply));
      // A reshard builds each rank's object: every rank's must come out
      // before anything changes anywhere.
      const bool reshards =
          objects[i].info.per_rank && (*archives)[i].size() != static_cast<size_t>(world);
      for (int r = 1; reshards && r < world; ++r) {
        HOLDFAST_RETURN_IF_ERROR(objects[i].load((*archives)[i], r, world).status());
      }
    }
    return Status::Ok();
  };
  return ReadCheckpoint(env, path, &targets);
}

// What ReadByChief read reaches every rank: arrays broadcast, the archives
// of serializable objects too, each rank then reading its own.
void BroadcastReadByChief(Communicator& comm, std::vector<TrackedObject>& objects,
                          const RestorePlan& plan,
                          const std::map<size_t, std::vector<std::string>>& archives) {
  const int rank = comm.rank(), world = comm.size();
  for (size_t i : plan.restored) {
    TrackedObject& object = objects.at(i);
    if (object.info.kind != ObjectKind::kSerializable) {
      for (const NamedBlob& blob : object.blobs()) {
        comm.Broadcast(blob.bytes.data(), blob.bytes.size(), 0);
      }
      continue;
    }
    // Small state: every rank gets every saved copy (a per-rank object may
    // be resharded from all of them) and reads its own.
    int64_t count = rank == 0 ? static_cast<int64_t>(archives.at(i).size()) : 0;
    comm.Broadcast(&count, sizeof count, 0);
    std::vector<std::string> saved(static_cast<size_t>(count));
    for (int64_t k = 0; k < count; ++k) {
      saved[k] = comm.BroadcastString(rank == 0 ? archives.at(i)[k] : "", 0);
    }
    if (rank != 0) {
      // The chief read these very bytes as this type a moment ago.
      auto apply = object.load(saved, rank, world);
      HOLDFAST_CHECK(apply.ok(), apply.status().ToString());
      (*apply)();
    }
  }
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
  if (options.gather_piece_bytes == 0) {
    return InvalidArgumentError("RestoreOptions::gather_piece_bytes must be > 0");
  }
  ParallelRestore parallel(env_, comm_, objects, options_.chief_writes_all, options.undo_on_failure,
                           options.gather_piece_bytes);
  std::optional<CheckpointContents> chosen;
  bool chosen_in_parallel = false;
  RestorePlan plan;
  // A checkpoint read the old way, by the chief alone (one written before
  // manifests recorded the layout): the archives of each restored
  // serializable object, and what assigns them (found while reading,
  // applied once all is verified).
  std::map<size_t, std::vector<std::string>> archives;
  std::vector<std::function<void()>> assign;
  Status status = Status::Ok();
  if (rank == 0) {
    // The chief walks the checkpoints newest first; for each whose manifest
    // fits this run it calls every rank to read it together.
    std::vector<DirectoryEntry> entries;
    if (env_->Exists(dir)) {
      auto listed = ListCheckpoints(env_, dir);
      if (listed.ok()) {
        entries = std::move(*listed);
      } else {
        status = listed.status();
      }
    }
    for (const DirectoryEntry& e : entries) {
      // An interrupted save: never committed, never read.
      if (e.kind == DirectoryEntry::kPrepareArea) (void)RemoveTree(env_, e.path);
    }
    auto read = [&](const DirectoryEntry& e) -> StatusOr<CheckpointContents> {
      // The manifest alone tells whether it belongs to this run.
      auto text = env_->ReadFile(JoinPath(e.path, kManifestFile), internal::kMaxManifestBytes);
      if (!text.ok()) return text.status();
      auto loaded = ParseManifest(*text, e.path);
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
      if (loaded.ok() && loaded->has_layout) {
        const json call = {{"manifest", *text}, {"path", e.path}, {"plan", PlanToJson(plan)}};
        (void)comm_->BroadcastString(call.dump(), 0);
        const Status read = parallel.Read(*loaded, e.path, plan);
        chosen_in_parallel = read.ok();
        if (!read.ok()) loaded = read;
      } else if (loaded.ok()) {
        loaded = ReadByChief(env_, *loaded, e.path, plan, objects, world, &archives, &assign);
      }
      if (loaded.status().code() == StatusCode::kFailedPrecondition) {
        return loaded.status().WithContext("checkpoint " + e.path);
      }
      return loaded;
    };
    if (status.ok()) {
      auto newest = ReadNewestValid(entries, dir, read);
      if (newest.ok()) {
        chosen = std::move(*newest);
      } else {
        status = newest.status();
      }
    }
    (void)comm_->BroadcastString("", 0);  // the walk is over
  } else {
    // The other ranks read each checkpoint the chief calls them to.
    for (std::string call; !(call = comm_->BroadcastString("", 0)).empty();) {
      const json j = json::parse(call);
      auto loaded = ParseManifest(j["manifest"].get<std::string>(), j["path"].get<std::string>());
      HOLDFAST_CHECK(loaded.ok(),
                     "the chief's manifest does not parse here: " << loaded.status().ToString());
      plan = PlanFromJson(j["plan"]);
      const Status read = parallel.Read(*loaded, j["path"].get<std::string>(), plan);
      chosen_in_parallel = read.ok();
      if (read.ok()) chosen = std::move(*loaded);
    }
  }
  // Everyone learns the outcome; then the state read reaches every rank.
  status = comm_->BroadcastStatus(status, 0);
  int64_t found = chosen ? 1 : 0;
  comm_->Broadcast(&found, sizeof found, 0);
  if (status.ok() && found != 0) {
    // What the chief's plan restores; the parallel reader has it already.
    const json p = json::parse(comm_->BroadcastString(rank == 0 ? PlanToJson(plan).dump() : "", 0));
    plan = PlanFromJson(p);
  }
  if (status.ok() && found != 0) status = parallel.CheckOverwritten(plan);
  if (!status.ok()) {
    parallel.Undo();
    return status;
  }
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

  fresh_objects_ = plan.fresh;
  if (rank == 0) {
    for (const std::string& path : fresh_objects_) {
      std::fprintf(stderr, "holdfast: checkpoint %s has no '%s': it starts fresh\n",
                   chosen->name.c_str(), path.c_str());
    }
    for (const std::string& path : plan.ignored) {
      std::fprintf(stderr, "holdfast: checkpoint %s: '%s' not restored (expect_partial)\n",
                   chosen->name.c_str(), path.c_str());
    }
  }
  std::map<std::string, double> values;
  if (chosen_in_parallel) {
    parallel.Assemble(plan);
    if (rank == 0) values = parallel.values();
  } else {
    if (rank == 0) {
      for (const std::function<void()>& apply : assign) apply();
      values = chosen->values;
    }
    BroadcastReadByChief(*comm_, objects, plan, archives);
  }
  for (size_t i : plan.restored) {
    if (objects[i].after_restore) objects[i].after_restore();
  }
  json scalars;
  if (rank == 0) {
    scalars = {{"step", chosen->step}, {"counters", chosen->counters}};
    // Doubles travel as their bit patterns: exact, whatever JSON would print.
    json bits = json::object();
    for (const auto& [key, v] : values) {
      uint64_t b;
      std::memcpy(&b, &v, sizeof b);
      bits[key] = b;
    }
    scalars["values"] = bits;
  }
  scalars = json::parse(comm_->BroadcastString(rank == 0 ? scalars.dump() : "", 0));
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
