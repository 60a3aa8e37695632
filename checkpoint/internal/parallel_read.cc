#include "checkpoint/internal/parallel_read.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>

#include "checkpoint/internal/background_worker.h"
#include "core/check.h"
#include "core/hash.h"
#include "core/internal/xxhash_native.h"

namespace holdfast::internal {
namespace {

using nlohmann::json;

// Reads go straight into their destination in pieces of this size: large
// enough that a syscall costs nothing per byte and readahead keeps the disk
// busy, small enough that a piece is still in the cache when it is hashed.
constexpr uint64_t kReadPiece = uint64_t{4} << 20;

// Where the archived prefix and the first slice's header end: the prefix
// region, which one reader reads whole (ShareOut never cuts it).
uint64_t PrefixEnd(const ShardInfo& shard) {
  return shard.slices.empty() ? shard.bytes : shard.slices.front().at;
}

// A shard as the layout describes it: headers and data, in file order.
struct Region {
  uint64_t begin = 0, end = 0;
  bool data = false;
  int slice = -1;  // the slice this region holds or whose header it ends with
};

std::vector<Region> RegionsOf(const ShardInfo& shard) {
  std::vector<Region> regions;
  uint64_t at = 0;
  for (size_t k = 0; k < shard.slices.size(); ++k) {
    const SliceInfo& s = shard.slices[k];
    regions.push_back({at, s.at, false, static_cast<int>(k)});
    at = s.at + s.count * sizeof(float);
    regions.push_back({s.at, at, true, static_cast<int>(k)});
  }
  if (shard.slices.empty()) regions.push_back({0, shard.bytes, false, -1});
  return regions;
}

uint64_t BlobWords(const CheckpointContents& c, const std::string& blob) {
  for (const auto& [name, words] : c.blob_floats) {
    if (name == blob) return words;
  }
  HOLDFAST_CHECK(false, "no blob " << blob << " in the manifest");
  return 0;
}

std::string HeaderOf(const CheckpointContents& c, const SliceInfo& s) {
  return SliceHeaderBytes(s.blob, BlobWords(c, s.blob), s.offset, s.count);
}

// Hashes a run of a file's bytes, starting at a chunk boundary, into the
// digests of its checksum chunks (ShardChecksum).
class ChunkHasher {
 public:
  explicit ChunkHasher(uint64_t begin) : pos_(begin), state_(XXH3_createState()) {
    HOLDFAST_CHECK(begin % kChecksumChunkBytes == 0, "a run starting inside a chunk");
    HOLDFAST_CHECK(state_ != nullptr, "out of memory");
  }

  void Add(const std::byte* p, uint64_t n) {
    while (n > 0) {
      const uint64_t into = pos_ % kChecksumChunkBytes;
      const uint64_t take = std::min<uint64_t>(n, kChecksumChunkBytes - into);
      if (into == 0 && take == kChecksumChunkBytes) {
        digests_.push_back(XXH3_64bits(p, take));
      } else {
        if (into == 0) XXH3_64bits_reset(state_.get());
        XXH3_64bits_update(state_.get(), p, take);
        if (into + take == kChecksumChunkBytes)
          digests_.push_back(XXH3_64bits_digest(state_.get()));
      }
      pos_ += take;
      p += take;
      n -= take;
    }
  }
  // The digests; a last, partial chunk (the end of the file) included.
  std::vector<uint64_t> Finish() {
    if (pos_ % kChecksumChunkBytes != 0) digests_.push_back(XXH3_64bits_digest(state_.get()));
    return std::move(digests_);
  }

 private:
  uint64_t pos_;
  struct FreeState {
    void operator()(XXH3_state_t* s) const { XXH3_freeState(s); }
  };
  std::unique_ptr<XXH3_state_t, FreeState> state_;
  std::vector<uint64_t> digests_;
};

// Opens a shard for reading once it is known to have the size the manifest
// says: a truncated or swapped shard is found before a byte is read.
StatusOr<std::unique_ptr<RandomAccessFile>> OpenShard(Env* env, const std::string& dir,
                                                      const ShardInfo& shard) {
  const std::string path = JoinPath(dir, shard.file);
  HOLDFAST_ASSIGN_OR_RETURN(uint64_t size, env->FileSize(path));
  if (size != shard.bytes) {
    return DataLossError(shard.file + " has " + std::to_string(size) + " bytes, manifest says " +
                         std::to_string(shard.bytes));
  }
  return env->NewRandomAccessFile(path);
}

Status ReadInto(RandomAccessFile& file, uint64_t offset, std::byte* into, uint64_t n) {
  return file.Read(offset, {reinterpret_cast<char*>(into), static_cast<size_t>(n)});
}

// The prefix region: the shard's header and archived prefix, then the first
// slice's header; checked against the manifest.
Status CheckPrefix(const CheckpointContents& c, const ShardInfo& shard, std::string_view bytes,
                   ShareRead* out) {
  std::string_view prefix = bytes;
  if (!shard.slices.empty()) {
    const std::string header = HeaderOf(c, shard.slices.front());
    if (bytes.size() < header.size() || !bytes.ends_with(header)) {
      return DataLossError(shard.file + ": the first slice's header differs from the manifest");
    }
    prefix.remove_suffix(header.size());
  }
  auto decoded = DecodeShardPrefix(prefix, shard.bytes);
  if (!decoded.ok()) return decoded.status().WithContext(shard.file);
  if (decoded->step != static_cast<uint64_t>(c.step)) {
    return DataLossError(shard.file + " belongs to step " + std::to_string(decoded->step));
  }
  if (decoded->rank != static_cast<uint32_t>(shard.writer_rank) ||
      decoded->slice_count != shard.slices.size()) {
    return DataLossError(shard.file + ": its header differs from the manifest");
  }
  if (shard.writer_rank == 0) {
    if (decoded->counters != c.counters) {
      return DataLossError(shard.file + ": counters differ from the manifest's");
    }
    out->values = std::move(decoded->values);
  }
  return Status::Ok();
}

}  // namespace

Shares ShareOut(const CheckpointContents& c, int world, bool chief_reads_all) {
  Shares shares(static_cast<size_t>(world));
  if (chief_reads_all || world == 1) {
    for (size_t s = 0; s < c.shards.size(); ++s) shares[0].push_back({s, 0, c.shards[s].bytes});
    return shares;
  }
  if (c.shards.size() == static_cast<size_t>(world)) {
    for (size_t s = 0; s < c.shards.size(); ++s) shares[s].push_back({s, 0, c.shards[s].bytes});
    return shares;
  }
  // Cut the shards' bytes, end to end, into `world` runs.
  std::vector<uint64_t> starts = {0};
  for (const ShardInfo& shard : c.shards) starts.push_back(starts.back() + shard.bytes);
  const uint64_t total = starts.back();
  std::vector<uint64_t> cuts = {0};
  for (int r = 1; r < world; ++r) {
    const uint64_t w = static_cast<uint64_t>(world), k = static_cast<uint64_t>(r);
    const uint64_t at = total / w * k + total % w * k / w;  // total * r / world, exactly
    const size_t s = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), at) -
                                         starts.begin() - 1);
    uint64_t local = 0;
    if (s < c.shards.size()) {
      local = at - starts[s];
      local -= local % kChecksumChunkBytes;
      if (local < PrefixEnd(c.shards[s])) local = 0;
    }
    cuts.push_back(std::max(cuts.back(), std::min(total, starts[s] + local)));
  }
  cuts.push_back(total);
  for (int r = 0; r < world; ++r) {
    for (size_t s = 0; s < c.shards.size(); ++s) {
      const uint64_t begin = std::max(cuts[r], starts[s]),
                     end = std::min(cuts[r + 1], starts[s + 1]);
      if (begin < end) shares[r].push_back({s, begin - starts[s], end - starts[s]});
    }
  }
  return shares;
}

std::set<std::string> SmallBlobs(const CheckpointContents& c) {
  std::set<std::string> small;
  for (const ShardInfo& shard : c.shards) {
    for (const SliceInfo& slice : shard.slices) {
      if (!slice.xxh3.empty()) small.insert(slice.blob);
    }
  }
  return small;
}

int SmallSliceReader(const Shares& shares, size_t shard, const SliceInfo& slice) {
  if (slice.count == 0) return -1;
  for (size_t r = 0; r < shares.size(); ++r) {
    for (const Extent& e : shares[r]) {
      if (e.shard == shard && e.begin <= slice.at && slice.at < e.end) return static_cast<int>(r);
    }
  }
  HOLDFAST_CHECK(false, "no rank reads a slice of " << slice.blob);
  return -1;
}

std::vector<size_t> BlobParts(const CheckpointContents& c, const Shares& shares,
                              const std::string& blob) {
  std::vector<size_t> offsets = {0};
  for (const std::vector<Extent>& share : shares) {
    uint64_t begin = UINT64_MAX, end = 0, bytes = 0;
    for (const Extent& e : share) {
      for (const SliceInfo& s : c.shards[e.shard].slices) {
        if (s.blob != blob) continue;
        const uint64_t a = std::max(e.begin, s.at);
        const uint64_t b = std::min(e.end, s.at + s.count * sizeof(float));
        if (a >= b) continue;
        const uint64_t first = s.offset * sizeof(float) + (a - s.at);
        begin = std::min(begin, first);
        end = std::max(end, first + (b - a));
        bytes += b - a;
      }
    }
    if (bytes == 0) {
      offsets.push_back(offsets.back());
      continue;
    }
    HOLDFAST_CHECK(begin == offsets.back() && end - begin == bytes,
                   "the ranks' parts of " << blob << " are not contiguous in rank order");
    offsets.push_back(end);
  }
  HOLDFAST_CHECK(offsets.back() == BlobWords(c, blob) * sizeof(float),
                 "the ranks' parts of " << blob << " do not cover it");
  return offsets;
}

Status ReadSmallSlices(Env* env, const std::string& dir, const CheckpointContents& c,
                       std::span<const Extent> share, const BlobMemory& staging) {
  for (const Extent& e : share) {
    const ShardInfo& shard = c.shards[e.shard];
    std::unique_ptr<RandomAccessFile> file;
    for (const SliceInfo& s : shard.slices) {
      if (s.xxh3.empty() || s.count == 0 || s.at < e.begin || s.at >= e.end) continue;
      if (!file) {
        HOLDFAST_ASSIGN_OR_RETURN(file, OpenShard(env, dir, shard));
      }
      const auto into = staging.find(s.blob);
      if (into == staging.end() || into->second.size() < (s.offset + s.count) * sizeof(float)) {
        return InternalError("no room staged for " + s.blob);
      }
      std::byte* p = into->second.data() + s.offset * sizeof(float);
      HOLDFAST_RETURN_IF_ERROR(ReadInto(*file, s.at, p, s.count * sizeof(float)));
      if (HexU64(XXH3_64bits(p, s.count * sizeof(float))) != s.xxh3) {
        return DataLossError(shard.file + ": " + s.blob + " hash mismatch");
      }
    }
  }
  return Status::Ok();
}

void ReadProgress::Add(const std::string& blob, uint64_t bytes) {
  {
    std::lock_guard lock(mu_);
    in_[blob] += bytes;
  }
  changed_.notify_all();
}

void ReadProgress::Finish() {
  {
    std::lock_guard lock(mu_);
    finished_ = true;
  }
  changed_.notify_all();
}

void ReadProgress::WaitFor(const std::string& blob, uint64_t bytes) {
  std::unique_lock lock(mu_);
  changed_.wait(lock, [&] { return finished_ || in_[blob] >= bytes; });
}

StatusOr<ShareRead> ReadShare(Env* env, const std::string& dir, const CheckpointContents& c,
                              std::span<const Extent> share, const BlobMemory& live,
                              const BlobMemory& small, bool hash_on_another_thread,
                              ReadProgress* progress) {
  ShareRead out;
  std::unique_ptr<std::byte[]> scratch;  // for verified words that are not kept
  // Hashing a piece while the next is read: the chunks' digests come out in
  // file order all the same, since the worker takes its jobs in order.
  std::optional<BackgroundWorker> worker;
  if (hash_on_another_thread) worker.emplace();
  struct Drain {  // every job done before the hasher it uses goes away
    std::optional<BackgroundWorker>& worker;
    ~Drain() {
      if (worker) worker->WaitIdle();
    }
  };
  for (const Extent& e : share) {
    const ShardInfo& shard = c.shards[e.shard];
    HOLDFAST_ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file, OpenShard(env, dir, shard));
    ChunkHasher hasher(e.begin);
    Drain drain{worker};
    // Memory that stays as it is until the share is read: hashed later.
    auto hash_later = [&](const std::byte* p, uint64_t n) {
      if (worker) {
        worker->Enqueue([&hasher, p, n] { hasher.Add(p, n); });
      } else {
        hasher.Add(p, n);
      }
    };
    // Memory about to be reused: hashed now, after what is queued.
    auto hash_now = [&](const std::byte* p, uint64_t n) {
      if (worker) worker->WaitIdle();
      hasher.Add(p, n);
    };
    for (const Region& region : RegionsOf(shard)) {
      const uint64_t a = std::max(region.begin, e.begin), b = std::min(region.end, e.end);
      if (a >= b) continue;
      if (!region.data) {
        std::string bytes(b - a, '\0');
        HOLDFAST_RETURN_IF_ERROR(file->Read(a, bytes));
        hash_now(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size());
        // What differs from the manifest is noted, not returned: a damaged
        // shard is named by its hash first (CheckChecksums).
        Status fits = Status::Ok();
        if (region.begin == 0) {
          HOLDFAST_CHECK(a == 0 && b == region.end, "a share cuts a shard's prefix");
          fits = CheckPrefix(c, shard, bytes, &out);
        } else {
          const std::string header = HeaderOf(c, shard.slices[region.slice]);
          if (std::string_view(header).substr(a - region.begin, b - a) != bytes) {
            fits = DataLossError(shard.file + ": a slice header differs from the manifest");
          }
        }
        if (!fits.ok() && out.damage.empty()) out.damage = fits.message();
        continue;
      }
      const SliceInfo& s = shard.slices[region.slice];
      const uint64_t first = s.offset * sizeof(float) + (a - s.at);  // in the blob
      if (!s.xxh3.empty()) {  // read already, checked by its digest
        const auto from = small.find(s.blob);
        if (from == small.end() || from->second.size() < first + (b - a)) {
          return InternalError("small blob " + s.blob + " was not staged");
        }
        hash_later(from->second.data() + first, b - a);
        continue;
      }
      const auto to = live.find(s.blob);
      if (to != live.end() && to->second.size() < first + (b - a)) {
        return InternalError("no room for " + s.blob + " where it is read to");
      }
      for (uint64_t done = 0; done < b - a;) {
        const uint64_t n = std::min(kReadPiece, b - a - done);
        if (to != live.end()) {
          std::byte* p = to->second.data() + first + done;
          HOLDFAST_RETURN_IF_ERROR(ReadInto(*file, a + done, p, n));
          hash_later(p, n);
          if (progress) progress->Add(s.blob, n);
        } else {
          if (!scratch) scratch.reset(new std::byte[kReadPiece]);
          if (worker) worker->WaitIdle();  // done with the scratch memory
          HOLDFAST_RETURN_IF_ERROR(ReadInto(*file, a + done, scratch.get(), n));
          hash_now(scratch.get(), n);
        }
        done += n;
      }
    }
    if (worker) worker->WaitIdle();
    out.chunks.push_back({e.shard, e.begin / kChecksumChunkBytes, hasher.Finish()});
  }
  return out;
}

Status CheckChecksums(const CheckpointContents& c, const std::vector<ShareRead>& reads) {
  bool chief_prefix = false;
  std::vector<std::vector<const ShareRead::Chunks*>> by_shard(c.shards.size());
  for (const ShareRead& read : reads) {
    chief_prefix |= read.values.has_value();
    for (const ShareRead::Chunks& chunks : read.chunks) {
      if (chunks.shard >= c.shards.size()) return DataLossError("a share names no shard");
      by_shard[chunks.shard].push_back(&chunks);
    }
  }
  for (size_t s = 0; s < c.shards.size(); ++s) {
    const ShardInfo& shard = c.shards[s];
    auto& parts = by_shard[s];
    std::sort(parts.begin(), parts.end(), [](auto* x, auto* y) { return x->first < y->first; });
    std::vector<uint64_t> digests;
    for (const ShareRead::Chunks* part : parts) {
      if (part->first != digests.size()) return DataLossError(shard.file + ": not read whole");
      digests.insert(digests.end(), part->digests.begin(), part->digests.end());
    }
    if (digests.size() != (shard.bytes + kChecksumChunkBytes - 1) / kChecksumChunkBytes) {
      return DataLossError(shard.file + ": not read whole");
    }
    if (HexU64(XXH3_64bits(digests.data(), digests.size() * sizeof(uint64_t))) != shard.xxh3) {
      return DataLossError(shard.file + ": hash mismatch");
    }
  }
  for (const ShareRead& read : reads) {
    if (!read.damage.empty()) return DataLossError(read.damage);
  }
  if (!chief_prefix) return DataLossError("no shard from rank 0");
  return Status::Ok();
}

std::string ShareRead::Encode() const {
  json j = {{"chunks", json::array()}, {"damage", damage}};
  for (const Chunks& c : chunks) j["chunks"].push_back({c.shard, c.first, c.digests});
  if (values) {
    // Doubles travel as their bit patterns: exact, whatever JSON would print.
    json v = json::object();
    for (const auto& [key, value] : *values) {
      uint64_t bits;
      std::memcpy(&bits, &value, sizeof bits);
      v[key] = bits;
    }
    j["values"] = v;
  }
  return j.dump();
}

StatusOr<ShareRead> ShareRead::Decode(const std::string& bytes) {
  ShareRead out;
  try {
    const json j = json::parse(bytes);
    out.damage = j.at("damage").get<std::string>();
    for (const json& c : j.at("chunks")) {
      out.chunks.push_back(
          {c.at(0).get<size_t>(), c.at(1).get<uint64_t>(), c.at(2).get<std::vector<uint64_t>>()});
    }
    if (j.contains("values")) {
      out.values.emplace();
      for (const auto& [key, bits] : j.at("values").items()) {
        const uint64_t b = bits.get<uint64_t>();
        double v;
        std::memcpy(&v, &b, sizeof v);
        (*out.values)[key] = v;
      }
    }
  } catch (const json::exception& e) {
    return InternalError(std::string("a rank's read report does not parse: ") + e.what());
  }
  return out;
}

}  // namespace holdfast::internal
