#include "checkpoint/reader.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <set>

#include "checkpoint/internal/manifest.h"
#include "checkpoint/internal/parallel_read.h"
#include "checkpoint/internal/shard_format.h"
#include "core/hash.h"

namespace holdfast {
namespace internal {

std::string ManifestChecksum(nlohmann::json manifest) {
  manifest.erase("checksum");
  return HexU64(Xxh3(manifest.dump()));
}

}  // namespace internal

namespace {

using nlohmann::json;

// The objects of a checkpoint written before they were recorded, from its
// blob names (docs/checkpoint-state.md).
std::vector<ObjectInfo> ObjectsOfBlobNames(const CheckpointContents& c) {
  ObjectInfo model, optimizer;
  model.path = "model";
  model.kind = ObjectKind::kModel;
  model.signature = c.model_signature;
  optimizer.path = "optimizer";
  optimizer.kind = ObjectKind::kOptimizer;
  optimizer.signature = c.optimizer_signature;
  std::vector<ObjectInfo> arrays;
  for (const auto& [name, floats] : c.blob_floats) {
    if (name == "params") {
      model.blobs.push_back(name);
    } else if (name.starts_with("optimizer/")) {
      optimizer.blobs.push_back(name);
    } else {
      ObjectInfo& array = arrays.emplace_back();
      array.path = name;
      array.kind = ObjectKind::kArray;
      array.dtype = "float32";
      array.shape = {static_cast<int64_t>(floats)};
      array.blobs = {name};
    }
  }
  std::vector<ObjectInfo> objects = {model, optimizer};
  objects.insert(objects.end(), arrays.begin(), arrays.end());
  return objects;
}

// The layout a writer makes (WriteShard): each shard's slices in file
// order, each right after its header, the first after the shard's prefix,
// the last ending the file; together they cover every blob exactly once.
// Checked from the manifest alone, before a byte of a shard is read.
Status CheckLayout(const CheckpointContents& c, const std::map<std::string, uint64_t>& blobs) {
  std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> covered;
  for (const ShardInfo& shard : c.shards) {
    uint64_t end = internal::kShardHeaderBytes;  // of what precedes the next header
    for (const SliceInfo& slice : shard.slices) {
      const auto blob = blobs.find(slice.blob);
      if (blob == blobs.end() || slice.offset > blob->second ||
          slice.count > blob->second - slice.offset) {
        return DataLossError(shard.file + ": a slice of " + slice.blob + " outside its blob");
      }
      const uint64_t header =
          internal::SliceHeaderBytes(slice.blob, blob->second, slice.offset, slice.count).size();
      const bool first = &slice == &shard.slices.front();
      // The first slice's header follows the archived counters and values,
      // whose length the manifest does not say.
      if (first ? slice.at < end + header : slice.at != end + header) {
        return DataLossError(shard.file + ": slice of " + slice.blob + " misplaced");
      }
      if (slice.count > (shard.bytes - std::min(shard.bytes, slice.at)) / sizeof(float)) {
        return DataLossError(shard.file + ": slice of " + slice.blob + " beyond the file");
      }
      end = slice.at + slice.count * sizeof(float);
      covered[slice.blob].emplace_back(slice.offset, slice.offset + slice.count);
    }
    if (!shard.slices.empty() && end != shard.bytes) {
      return DataLossError(shard.file + ": its last slice does not end the file");
    }
  }
  for (const auto& [name, words] : blobs) {
    auto& ranges = covered[name];
    std::sort(ranges.begin(), ranges.end());
    uint64_t next = 0;
    for (const auto& [begin, end] : ranges) {
      if (begin != next) return DataLossError("blob " + name + " is not covered exactly");
      next = end;
    }
    if (next != words) return DataLossError("blob " + name + " is incomplete");
  }
  return Status::Ok();
}

// ReadCheckpoint of a checkpoint whose manifest records the layout: one
// reader takes every shard's bytes as a parallel restore's ranks share
// them (internal/parallel_read.h), into staging memory, so that nothing
// reaches `targets->live` before all is verified.
StatusOr<CheckpointContents> ReadLaidOut(Env* env, const std::string& dir, CheckpointContents c,
                                         const ReadTargets* targets) {
  auto skipped = [targets](const std::string& name) {
    return targets != nullptr && targets->skip.contains(name);
  };
  const std::set<std::string> small = internal::SmallBlobs(c);
  internal::BlobMemory staged;  // every blob kept, and the small ones: hashed from here
  for (const auto& [name, floats] : c.blob_floats) {
    if (skipped(name) && !small.contains(name)) continue;
    std::vector<float>& words = c.blobs[name];
    words.resize(floats);
    staged[name] = std::as_writable_bytes(std::span(words));
  }
  const internal::Shares shares = internal::ShareOut(c, 1, /*chief_reads_all=*/true);
  HOLDFAST_RETURN_IF_ERROR(internal::ReadSmallSlices(env, dir, c, shares[0], staged));
  HOLDFAST_ASSIGN_OR_RETURN(internal::ShareRead read,
                            internal::ReadShare(env, dir, c, shares[0], staged, staged));
  HOLDFAST_RETURN_IF_ERROR(internal::CheckChecksums(c, {read}));
  c.values = std::move(*read.values);
  for (const std::string& name : small) {
    if (skipped(name)) c.blobs.erase(name);
  }
  if (targets == nullptr) return c;
  if (targets->before_live) {
    // It sees the blobs that are not going live, as a caller would.
    std::map<std::string, std::vector<float>> going_live;
    for (const auto& [name, span] : targets->live) {
      going_live[name] = std::move(c.blobs.at(name));
      c.blobs.erase(name);
    }
    HOLDFAST_RETURN_IF_ERROR(targets->before_live(c));
    for (auto& [name, words] : going_live) c.blobs[name] = std::move(words);
  }
  for (const auto& [name, span] : targets->live) {
    std::memcpy(span.data(), c.blobs.at(name).data(), span.size());
    c.blobs.erase(name);
  }
  return c;
}

}  // namespace

uint64_t CheckpointContents::bytes() const {
  uint64_t total = 0;
  for (const ShardInfo& s : shards) total += s.bytes;
  return total;
}

const ObjectInfo* CheckpointContents::ObjectOf(const std::string& blob) const {
  for (const ObjectInfo& o : objects) {
    if (std::find(o.blobs.begin(), o.blobs.end(), blob) != o.blobs.end()) return &o;
  }
  return nullptr;
}

StatusOr<CheckpointContents> ReadManifest(Env* env, const std::string& dir) {
  HOLDFAST_ASSIGN_OR_RETURN(
      std::string text, env->ReadFile(JoinPath(dir, kManifestFile), internal::kMaxManifestBytes));
  return ParseManifest(text, dir);
}

StatusOr<CheckpointContents> ParseManifest(const std::string& text, const std::string& dir) {
  const json manifest = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object() || !manifest.contains("checksum") ||
      !manifest["checksum"].is_string()) {
    return DataLossError(dir + "/MANIFEST.json does not parse");
  }
  if (manifest["checksum"].get<std::string>() != internal::ManifestChecksum(manifest)) {
    return DataLossError(dir + "/MANIFEST.json checksum mismatch");
  }
  CheckpointContents c;
  try {
    c.format_version = manifest.at("format_version").get<uint32_t>();
    if (c.format_version < internal::kOldestShardFormatVersion ||
        c.format_version > internal::kShardFormatVersion) {
      return DataLossError(dir + ": unsupported format version " +
                           std::to_string(c.format_version));
    }
    const size_t slash = dir.find_last_of('/');
    c.name = slash == std::string::npos ? dir : dir.substr(slash + 1);
    c.step = manifest.at("step").get<int64_t>();
    c.world_size = manifest.at("world_size").get<int>();
    c.created_unix = manifest.at("created_unix").get<double>();
    c.created_utc = manifest.at("created_utc").get<std::string>();
    c.holdfast_version = manifest.at("holdfast_version").get<std::string>();
    c.model_signature = manifest.at("model_signature").get<std::string>();
    c.optimizer_signature = manifest.at("optimizer_signature").get<std::string>();
    c.counters = manifest.at("counters").get<std::map<std::string, int64_t>>();
    const json& shards = manifest.at("shards");
    c.has_layout = !shards.empty();
    for (const json& s : shards) {
      ShardInfo info{s.at("file").get<std::string>(),
                     s.at("bytes").get<uint64_t>(),
                     s.at("xxh3").get<std::string>(),
                     s.at("rank").get<int>(),
                     {}};
      if (!IsShardFileName(info.file)) {
        return DataLossError(dir + ": manifest names a shard outside the checkpoint: " + info.file);
      }
      if (!s.contains("slices")) c.has_layout = false;
      for (const json& slice : s.value("slices", json::array())) {
        SliceInfo& si = info.slices.emplace_back();
        si.blob = slice.at(0).get<std::string>();
        si.offset = slice.at(1).get<uint64_t>();
        si.count = slice.at(2).get<uint64_t>();
        si.at = slice.at(3).get<uint64_t>();
        if (slice.size() > 4) si.xxh3 = slice.at(4).get<std::string>();
      }
      c.shards.push_back(std::move(info));
    }
    for (const json& b : manifest.at("blobs")) {
      c.blob_floats.emplace_back(b.at("name").get<std::string>(), b.at("floats").get<uint64_t>());
    }
    if (manifest.contains("objects")) {
      for (const json& entry : manifest.at("objects")) {
        auto object = ObjectFromJson(entry);
        if (!object.ok()) return object.status().WithContext(dir + "/MANIFEST.json");
        c.objects.push_back(std::move(*object));
      }
    } else {
      c.objects = ObjectsOfBlobNames(c);
    }
  } catch (const json::exception& e) {
    return DataLossError(dir + "/MANIFEST.json is malformed: " + e.what());
  }
  if (c.shards.empty()) return DataLossError(dir + ": manifest lists no shards");
  // Layouts came with format 2's chunked checksum, which readers split.
  c.has_layout = c.has_layout && c.format_version >= 2;
  std::map<std::string, uint64_t> blob_words;
  for (const auto& [name, floats] : c.blob_floats) blob_words.emplace(name, floats);
  if (Status fits = CheckObjects(c.objects, blob_words); !fits.ok()) {
    return fits.WithContext(dir + "/MANIFEST.json");
  }
  if (c.has_layout) {
    if (Status fits = CheckLayout(c, blob_words); !fits.ok()) {
      return fits.WithContext(dir + "/MANIFEST.json");
    }
  }
  return c;
}

StatusOr<CheckpointContents> ReadCheckpoint(Env* env, const std::string& dir,
                                            const ReadTargets* targets) {
  const BlobDestinations* into = targets != nullptr ? &targets->live : nullptr;
  HOLDFAST_ASSIGN_OR_RETURN(CheckpointContents c, ReadManifest(env, dir));
  std::map<std::string, uint64_t> blob_sizes;
  uint64_t total_floats = 0;
  for (const auto& [name, floats] : c.blob_floats) {
    if (!blob_sizes.emplace(name, floats).second) return DataLossError(dir + ": blob listed twice");
    total_floats += floats;
    if (total_floats < floats) return DataLossError(dir + ": absurd blob sizes");
  }
  // The shard files on disk must be as large as claimed, and together able
  // to hold every float, before anything is allocated for them.
  uint64_t shard_bytes = 0;
  for (const ShardInfo& info : c.shards) {
    HOLDFAST_ASSIGN_OR_RETURN(uint64_t size, env->FileSize(JoinPath(dir, info.file)));
    if (size != info.bytes) {
      return DataLossError(info.file + " has " + std::to_string(size) + " bytes, manifest says " +
                           std::to_string(info.bytes));
    }
    shard_bytes += size;
  }
  if (total_floats > shard_bytes / sizeof(float)) {
    return DataLossError(dir + ": manifest lists more data than its shards hold");
  }
  if (into != nullptr) {
    // The caller matched its objects with the checkpoint's (restore's
    // strict check); a destination that does not fit is its mistake.
    std::string misfits;
    for (const auto& [name, span] : *into) {
      const auto it = blob_sizes.find(name);
      if (it != blob_sizes.end() && it->second * sizeof(float) == span.size()) continue;
      if (!misfits.empty()) misfits += ", ";
      misfits += name + (it == blob_sizes.end()
                             ? " (not saved)"
                             : " (" + std::to_string(it->second * sizeof(float)) +
                                   " bytes saved, " + std::to_string(span.size()) + " here)");
    }
    if (!misfits.empty()) return FailedPreconditionError("blobs that do not fit: " + misfits);
  }
  if (c.has_layout) return ReadLaidOut(env, dir, std::move(c), targets);
  // A checkpoint written before manifests recorded the layout.
  // First every shard is read, its hash checked and its layout decoded
  // (the floats skipped), and the slices must cover every blob exactly;
  // only then are floats copied anywhere, so a damaged checkpoint leaves
  // the destination untouched.
  std::vector<std::string> files;
  std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>> covered;
  bool have_chief_shard = false;
  for (const ShardInfo& info : c.shards) {
    HOLDFAST_ASSIGN_OR_RETURN(std::string bytes,
                              env->ReadFile(JoinPath(dir, info.file), info.bytes));
    if (HexU64(internal::ShardChecksum(bytes, c.format_version)) != info.xxh3) {
      return DataLossError(info.file + ": hash mismatch");
    }
    auto shard = internal::DecodeShard(bytes, blob_sizes);
    if (!shard.ok()) return shard.status().WithContext(info.file);
    if (shard->step != static_cast<uint64_t>(c.step)) {
      return DataLossError(info.file + " belongs to step " + std::to_string(shard->step));
    }
    if (shard->rank == 0) {
      have_chief_shard = true;
      c.values = std::move(shard->values);
      if (shard->counters != c.counters) {
        return DataLossError(info.file + ": counters differ from the manifest's");
      }
    }
    for (const internal::DecodedShard::Slice& slice : shard->slices) {
      covered[slice.name].emplace_back(slice.offset, slice.offset + slice.count);
    }
    files.push_back(std::move(bytes));
  }
  if (!have_chief_shard) return DataLossError(dir + ": no shard from rank 0");
  for (const auto& [name, floats] : blob_sizes) {
    auto& ranges = covered[name];
    std::sort(ranges.begin(), ranges.end());
    uint64_t next = 0;
    for (const auto& [begin, end] : ranges) {
      if (begin != next) return DataLossError(dir + ": blob " + name + " is not covered exactly");
      next = end;
    }
    if (next != floats) return DataLossError(dir + ": blob " + name + " is incomplete");
  }

  // The staged blobs first, so that `before_live` sees them; the live
  // destinations last; skipped ones nowhere.
  auto live = [into](const std::string& name) { return into != nullptr && into->contains(name); };
  auto skipped = [targets](const std::string& name) {
    return targets != nullptr && targets->skip.contains(name);
  };
  bool staged = false;
  for (const auto& [name, floats] : blob_sizes) {
    if (live(name) || skipped(name)) continue;
    c.blobs[name].resize(floats);
    staged = true;
  }
  for (const bool to_live : {false, true}) {
    if (!to_live && !staged) continue;  // nothing staged: one pass
    if (to_live && targets != nullptr && targets->before_live) {
      HOLDFAST_RETURN_IF_ERROR(targets->before_live(c));
    }
    if (to_live && into == nullptr) break;
    const internal::SliceDestination destination = [&](const std::string& name, uint64_t offset,
                                                       uint64_t /*count*/) -> std::byte* {
      if (skipped(name) || live(name) != to_live) return nullptr;
      if (to_live) return into->at(name).data() + offset * sizeof(float);
      return reinterpret_cast<std::byte*>(c.blobs.at(name).data() + offset);
    };
    for (size_t i = 0; i < files.size(); ++i) {
      // The same bytes decoded a moment ago: this cannot fail but is checked.
      const auto shard = internal::DecodeShard(files[i], blob_sizes, destination);
      if (!shard.ok()) return shard.status().WithContext(c.shards[i].file);
      // Peak memory: the shards not yet copied.
      if (to_live || into == nullptr) std::string().swap(files[i]);
    }
  }
  return c;
}

StatusOr<std::optional<CheckpointContents>> ReadNewestValid(
    const std::vector<DirectoryEntry>& entries, const std::string& dir,
    const std::function<StatusOr<CheckpointContents>(const DirectoryEntry&)>& read) {
  std::string damaged;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    // Uncommitted (a removal cut short, a save's rename undone): never read.
    if (it->kind != DirectoryEntry::kCommitted) continue;
    StatusOr<CheckpointContents> loaded = read(*it);
    if (loaded.ok()) return std::optional<CheckpointContents>(std::move(*loaded));
    if (loaded.status().code() == StatusCode::kFailedPrecondition) return loaded.status();
    std::fprintf(stderr, "holdfast: checkpoint %s is damaged (%s); falling back\n",
                 it->path.c_str(), loaded.status().message().c_str());
    if (!damaged.empty()) damaged += "; ";
    damaged += it->name;
    damaged += ": ";
    damaged += loaded.status().message();
  }
  if (!damaged.empty())
    return DataLossError("no usable checkpoint in " + dir + " (" + damaged + ")");
  return std::optional<CheckpointContents>();
}

}  // namespace holdfast
