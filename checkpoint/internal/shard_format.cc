#include "checkpoint/internal/shard_format.h"

#include <algorithm>
#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/serialization/binary_object.hpp>
#include <boost/serialization/split_member.hpp>
#include <boost/serialization/version.hpp>
#include <cstring>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <streambuf>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/internal/xxhash_native.h"

namespace holdfast::internal {
namespace {

constexpr char kMagic[8] = {'H', 'F', 'S', 'H', 'A', 'R', 'D', '1'};

// Limits checked before allocating anything a file asks for.
constexpr uint32_t kMaxNameBytes = 4096;
constexpr uint64_t kMaxEntries = 1 << 16;

// Strings and maps go through these instead of Boost's own string code,
// which sizes a string from the file before reading it.
template <class Archive>
void SaveName(Archive& ar, const std::string& name) {
  const uint32_t n = static_cast<uint32_t>(name.size());
  ar << n;
  ar << boost::serialization::make_binary_object(const_cast<char*>(name.data()), n);
}

template <class Archive>
std::string LoadName(Archive& ar) {
  uint32_t n = 0;
  ar >> n;
  if (n > kMaxNameBytes)
    throw std::runtime_error("name longer than " + std::to_string(kMaxNameBytes));
  std::string name(n, '\0');
  ar >> boost::serialization::make_binary_object(name.data(), n);
  return name;
}

template <class Archive, typename V>
void SaveMap(Archive& ar, const std::map<std::string, V>& m) {
  const uint64_t n = m.size();
  ar << n;
  for (const auto& [key, value] : m) {
    SaveName(ar, key);
    ar << value;
  }
}

template <class Archive, typename V>
void LoadMap(Archive& ar, std::map<std::string, V>& m) {
  uint64_t n = 0;
  ar >> n;
  if (n > kMaxEntries) throw std::runtime_error("absurd number of entries");
  for (uint64_t i = 0; i < n; ++i) {
    std::string key = LoadName(ar);
    V value;
    ar >> value;
    m.emplace(std::move(key), value);
  }
}

// The output side of the archive. Small writes (Boost's integers, names)
// gather in a small buffer; large ones (the slices) go from the caller's
// memory to the file in pieces, never copied by holdfast. Each piece is
// hashed right before it is written, while it is still in the cache.
// Without a file it only counts bytes (the first pass of WriteShard).
class ShardSink final : public std::streambuf {
 public:
  // `start`: the file's bytes before this sink's first one.
  explicit ShardSink(WritableFile* file, uint64_t start = 0)
      : file_(file), start_(start), chunk_(XXH3_createState()) {
    HOLDFAST_CHECK(chunk_ != nullptr, "out of memory");
    setp(buffer_, buffer_ + sizeof buffer_);
  }

  // Sends what is buffered; the first failed Append, if any.
  Status Finish() {
    Drain();
    return status_;
  }
  // The file position of the next byte put.
  uint64_t bytes() const { return start_ + emitted_ + static_cast<uint64_t>(pptr() - pbase()); }
  uint64_t checksum() const {
    std::vector<uint64_t> digests = digests_;
    if (hashed_ % kChecksumChunkBytes != 0) digests.push_back(XXH3_64bits_digest(chunk_.get()));
    return XXH3_64bits(digests.data(), digests.size() * sizeof(uint64_t));
  }
  // The next bytes put are a slice whose whole chunks have these digests.
  void ExpectSlice(std::span<const uint64_t> digests) {
    known_ = digests;
    known_first_ = (bytes() + kChecksumChunkBytes - 1) / kChecksumChunkBytes;
  }

 protected:
  int_type overflow(int_type c) override {
    Drain();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }

  std::streamsize xsputn(const char* s, std::streamsize n) override {
    if (n > epptr() - pptr()) {
      Drain();
      if (n >= static_cast<std::streamsize>(sizeof buffer_)) {
        Emit(s, static_cast<size_t>(n));
        return n;
      }
    }
    std::memcpy(pptr(), s, static_cast<size_t>(n));
    pbump(static_cast<int>(n));
    return n;
  }

  int sync() override {
    Drain();
    return 0;
  }

 private:
  // 4 MiB pieces: small enough to stay in a server's last-level cache
  // between hashing and a buffered write's copy, large enough that a direct
  // write from the caller's memory costs little per byte (1 MiB direct
  // writes took 1.5x the CPU time). Pieces end at multiples of kPiece in the
  // file, so that a direct file sends each in one write.
  static constexpr size_t kPiece = size_t{4} << 20;

  void Drain() {
    Emit(pbase(), static_cast<size_t>(pptr() - pbase()));
    setp(buffer_, buffer_ + sizeof buffer_);
  }

  void Emit(const char* p, size_t n) {
    if (file_ == nullptr) {
      emitted_ += n;
      return;
    }
    for (size_t done = 0; done < n;) {
      const size_t piece = std::min<uint64_t>(kPiece - (start_ + emitted_) % kPiece, n - done);
      Hash(p + done, piece);
      // After a failure the rest is still counted and hashed, not written:
      // Boost must not see a short write (it would throw mid-archive).
      if (status_.ok()) status_ = file_->Append({p + done, piece});
      emitted_ += piece;
      done += piece;
    }
  }

  // Hashes the file's next `n` bytes chunk by chunk, taking the digests of
  // whole chunks of the current slice from ExpectSlice instead.
  void Hash(const char* p, size_t n) {
    while (n > 0) {
      const uint64_t chunk = hashed_ / kChecksumChunkBytes;
      const uint64_t into = hashed_ % kChecksumChunkBytes;
      const size_t take = std::min<uint64_t>(n, kChecksumChunkBytes - into);
      if (into == 0 && take == kChecksumChunkBytes && chunk >= known_first_ &&
          chunk - known_first_ < known_.size()) {
        digests_.push_back(known_[chunk - known_first_]);
      } else {
        if (into == 0) XXH3_64bits_reset(chunk_.get());
        XXH3_64bits_update(chunk_.get(), p, take);
        if (into + take == kChecksumChunkBytes)
          digests_.push_back(XXH3_64bits_digest(chunk_.get()));
      }
      hashed_ += take;
      p += take;
      n -= take;
    }
  }

  WritableFile* file_;
  uint64_t start_;
  struct FreeState {
    void operator()(XXH3_state_t* state) const { XXH3_freeState(state); }
  };
  std::unique_ptr<XXH3_state_t, FreeState> chunk_;  // the chunk being hashed
  std::vector<uint64_t> digests_;                   // of every whole chunk so far
  uint64_t hashed_ = 0;
  std::span<const uint64_t> known_;
  uint64_t known_first_ = 0;
  uint64_t emitted_ = 0;
  Status status_ = Status::Ok();
  char buffer_[64 << 10];
};

// The input side: the shard's bytes, read in place.
class ByteSource final : public std::streambuf {
 public:
  explicit ByteSource(std::string_view bytes) {
    char* begin = const_cast<char*>(bytes.data());  // never written: no put area
    setg(begin, begin, begin + bytes.size());
  }
  uint64_t remaining() const { return static_cast<uint64_t>(egptr() - gptr()); }
  void Skip(uint64_t n) {
    if (n > remaining()) throw std::runtime_error("archive ends early");
    setg(eback(), gptr() + n, egptr());
  }
};

// The archived part. Saving reads from a ShardToWrite, loading fills a
// DecodedShard, checking every size against the expected blobs first.
struct Payload {
  const ShardToWrite* in = nullptr;
  // Saving: the sink (slices announce their chunk digests to it), and
  // optionally where each slice's offset in the file is recorded.
  ShardSink* sink = nullptr;
  std::vector<uint64_t>* slice_offsets = nullptr;
  DecodedShard* out = nullptr;
  const std::map<std::string, uint64_t>* blob_sizes = nullptr;
  ByteSource* source = nullptr;
  const SliceDestination* into = nullptr;
  // Loading only the part before the first slice (DecodeShardPrefix): the
  // number of slices goes here and loading stops.
  uint64_t* slice_count = nullptr;

  template <class Archive>
  void save(Archive& ar, unsigned /*version*/) const {
    static const std::map<std::string, int64_t> kNoCounters;
    static const std::map<std::string, double> kNoValues;
    ar << in->rank << in->world << in->step;
    SaveMap(ar, in->counters ? *in->counters : kNoCounters);
    SaveMap(ar, in->values ? *in->values : kNoValues);
    const uint64_t n = in->slices.size();
    ar << n;
    for (const ShardToWrite::Slice& s : in->slices) {
      const uint64_t count = s.data.size() / sizeof(float);
      SaveName(ar, s.name);
      ar << s.total << s.offset << count;
      // The archive writes straight to the sink, unbuffered: its count is
      // where the block below starts.
      if (slice_offsets != nullptr) slice_offsets->push_back(sink->bytes());
      sink->ExpectSlice(s.chunk_digests);
      // One raw block per slice: large arrays are never written element by element.
      ar << boost::serialization::make_binary_object(const_cast<std::byte*>(s.data.data()),
                                                     count * sizeof(float));
    }
  }

  template <class Archive>
  void load(Archive& ar, unsigned version) {
    if (version != 1) throw std::runtime_error("unknown shard payload version");
    ar >> out->rank >> out->world >> out->step;
    LoadMap(ar, out->counters);
    LoadMap(ar, out->values);
    uint64_t n = 0;
    ar >> n;
    if (slice_count != nullptr) {
      *slice_count = n;
      return;
    }
    if (n > blob_sizes->size() * 4096) throw std::runtime_error("absurd slice count");
    for (uint64_t i = 0; i < n; ++i) {
      DecodedShard::Slice s;
      s.name = LoadName(ar);
      ar >> s.total >> s.offset >> s.count;
      const auto expected = blob_sizes->find(s.name);
      if (expected == blob_sizes->end()) throw std::runtime_error("unknown blob " + s.name);
      if (s.total != expected->second || s.offset > s.total || s.count > s.total - s.offset) {
        throw std::runtime_error("slice of " + s.name + " does not fit the model");
      }
      if (s.count > source->remaining() / sizeof(float)) {
        throw std::runtime_error("slice of " + s.name + " is longer than the file");
      }
      const uint64_t bytes = s.count * sizeof(float);
      std::byte* destination = *into ? (*into)(s.name, s.offset, s.count) : nullptr;
      if (destination != nullptr) {
        ar >> boost::serialization::make_binary_object(destination, bytes);
      } else {
        source->Skip(bytes);
      }
      out->slices.push_back(std::move(s));
    }
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

template <typename T>
T Get(std::string_view bytes, size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof value);
  return value;
}

}  // namespace
}  // namespace holdfast::internal

BOOST_CLASS_VERSION(holdfast::internal::Payload, 1)

namespace holdfast::internal {

namespace {

void ArchivePayload(ShardSink& sink, const ShardToWrite& shard,
                    std::vector<uint64_t>* slice_offsets = nullptr) {
  // No Boost archive header: holdfast's own header carries the magic and
  // version, and Boost's would be a length-prefixed string read unchecked.
  boost::archive::binary_oarchive archive(sink, boost::archive::no_header);
  const Payload payload{.in = &shard, .sink = &sink, .slice_offsets = slice_offsets};
  archive << payload;
}

template <typename T>
void PutTo(std::streambuf& sink, T value) {
  sink.sputn(reinterpret_cast<const char*>(&value), sizeof value);
}

// An in-memory WritableFile for EncodeShard.
class StringFile final : public WritableFile {
 public:
  explicit StringFile(std::string* out) : out_(out) {}
  Status Append(std::span<const char> data) override {
    out_->append(data.data(), data.size());
    return Status::Ok();
  }
  Status Sync() override { return Status::Ok(); }
  Status Close() override { return Status::Ok(); }

 private:
  std::string* out_;
};

}  // namespace

StatusOr<WrittenShard> WriteShard(const ShardToWrite& shard, WritableFile& file) {
  try {
    WrittenShard written;
    ShardSink counter(nullptr);
    ArchivePayload(counter, shard);
    const uint64_t payload_bytes = counter.bytes();

    ShardSink sink(&file);
    sink.sputn(kMagic, sizeof kMagic);
    PutTo<uint32_t>(sink, kShardFormatVersion);
    PutTo<uint32_t>(sink, shard.rank);
    PutTo<uint32_t>(sink, shard.world);
    PutTo<uint32_t>(sink, 0);
    PutTo<uint64_t>(sink, shard.step);
    PutTo<uint64_t>(sink, payload_bytes);
    ArchivePayload(sink, shard, &written.slice_offsets);
    HOLDFAST_RETURN_IF_ERROR(sink.Finish());
    if (sink.bytes() != kShardHeaderBytes + payload_bytes) {
      return InternalError("shard encoding is not deterministic");
    }
    written.bytes = sink.bytes();
    written.checksum = sink.checksum();
    return written;
  } catch (const std::exception& e) {
    return InternalError(std::string("cannot encode shard: ") + e.what());
  }
}

std::vector<uint64_t> SliceFileOffsets(const ShardToWrite& shard) {
  ShardSink counter(nullptr, /*start=*/kShardHeaderBytes);
  std::vector<uint64_t> offsets;
  ArchivePayload(counter, shard, &offsets);
  return offsets;
}

std::string SliceHeaderBytes(const std::string& name, uint64_t total, uint64_t offset,
                             uint64_t count) {
  std::stringbuf out;
  {
    boost::archive::binary_oarchive archive(out, boost::archive::no_header);
    SaveName(archive, name);  // as Payload::save writes it
    archive << total << offset << count;
  }
  return out.str();
}

StatusOr<ShardPrefix> DecodeShardPrefix(std::string_view prefix, uint64_t file_bytes) {
  if (prefix.size() < kShardHeaderBytes || std::memcmp(prefix.data(), kMagic, sizeof kMagic) != 0) {
    return DataLossError("not a holdfast shard (bad magic)");
  }
  const uint32_t version = Get<uint32_t>(prefix, 8);
  if (version < kOldestShardFormatVersion || version > kShardFormatVersion) {
    return DataLossError("shard format version " + std::to_string(version) + " is not supported");
  }
  if (Get<uint64_t>(prefix, 32) != file_bytes - kShardHeaderBytes) {
    return DataLossError("shard payload length does not match the file");
  }
  ShardPrefix out;
  DecodedShard decoded;
  const std::map<std::string, uint64_t> no_blobs;
  try {
    ByteSource source(prefix.substr(kShardHeaderBytes));
    boost::archive::binary_iarchive archive(source, boost::archive::no_header);
    Payload payload{.out = &decoded,
                    .blob_sizes = &no_blobs,
                    .source = &source,
                    .slice_count = &out.slice_count};
    archive >> payload;
    if (source.remaining() != 0) throw std::runtime_error("bytes left before the first slice");
  } catch (const std::exception& e) {
    return DataLossError(std::string("shard payload is damaged: ") + e.what());
  }
  if (decoded.rank != Get<uint32_t>(prefix, 12) || decoded.world != Get<uint32_t>(prefix, 16) ||
      decoded.step != Get<uint64_t>(prefix, 24)) {
    return DataLossError("shard header and payload disagree");
  }
  out.rank = decoded.rank;
  out.world = decoded.world;
  out.step = decoded.step;
  out.counters = std::move(decoded.counters);
  out.values = std::move(decoded.values);
  return out;
}

std::string EncodeShard(const ShardToWrite& shard) {
  std::string out;
  StringFile file(&out);
  const StatusOr<WrittenShard> written = WriteShard(shard, file);
  HOLDFAST_CHECK(written.ok(), written.status().ToString());
  return out;
}

uint64_t ShardChecksum(std::string_view file, uint32_t format_version) {
  if (format_version < 2) return XXH3_64bits(file.data(), file.size());
  const int64_t chunks =
      static_cast<int64_t>((file.size() + kChecksumChunkBytes - 1) / kChecksumChunkBytes);
  std::vector<uint64_t> digests(static_cast<size_t>(chunks));
#pragma omp parallel for schedule(static) if (chunks > 64)
  for (int64_t c = 0; c < chunks; ++c) {
    const size_t begin = static_cast<size_t>(c) * kChecksumChunkBytes;
    digests[static_cast<size_t>(c)] =
        XXH3_64bits(file.data() + begin, std::min(kChecksumChunkBytes, file.size() - begin));
  }
  return XXH3_64bits(digests.data(), digests.size() * sizeof(uint64_t));
}

StatusOr<DecodedShard> DecodeShard(std::string_view bytes,
                                   const std::map<std::string, uint64_t>& blob_sizes,
                                   const SliceDestination& into) {
  if (bytes.size() < kShardHeaderBytes || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return DataLossError("not a holdfast shard (bad magic)");
  }
  const uint32_t version = Get<uint32_t>(bytes, 8);
  if (version < kOldestShardFormatVersion || version > kShardFormatVersion) {
    return DataLossError("shard format version " + std::to_string(version) +
                         " is not supported (this holdfast reads versions " +
                         std::to_string(kOldestShardFormatVersion) + " to " +
                         std::to_string(kShardFormatVersion) + ")");
  }
  if (Get<uint64_t>(bytes, 32) != bytes.size() - kShardHeaderBytes) {
    return DataLossError("shard payload length does not match the file");
  }
  DecodedShard shard;
  try {
    ByteSource source(bytes.substr(kShardHeaderBytes));
    boost::archive::binary_iarchive archive(source, boost::archive::no_header);
    Payload payload{.out = &shard, .blob_sizes = &blob_sizes, .source = &source, .into = &into};
    archive >> payload;
  } catch (const std::exception& e) {
    return DataLossError(std::string("shard payload is damaged: ") + e.what());
  }
  if (shard.rank != Get<uint32_t>(bytes, 12) || shard.world != Get<uint32_t>(bytes, 16) ||
      shard.step != Get<uint64_t>(bytes, 24)) {
    return DataLossError("shard header and payload disagree");
  }
  return shard;
}

}  // namespace holdfast::internal
