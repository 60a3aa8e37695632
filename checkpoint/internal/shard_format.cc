#include "checkpoint/internal/shard_format.h"

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/iostreams/device/array.hpp>
#include <boost/iostreams/device/back_inserter.hpp>
#include <boost/iostreams/stream.hpp>
#include <boost/serialization/binary_object.hpp>
#include <boost/serialization/split_member.hpp>
#include <boost/serialization/version.hpp>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>

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

// The archived part. Saving reads from a ShardToWrite, loading fills a
// DecodedShard, checking every size against the expected blobs first.
struct Payload {
  const ShardToWrite* in = nullptr;
  DecodedShard* out = nullptr;
  const std::map<std::string, uint64_t>* blob_sizes = nullptr;

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
      const uint64_t count = s.data.size();
      SaveName(ar, s.name);
      ar << s.total << s.offset << count;
      // One raw block per slice: large arrays are never written element by element.
      ar << boost::serialization::make_binary_object(const_cast<float*>(s.data.data()),
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
    if (n > blob_sizes->size() * 4096) throw std::runtime_error("absurd slice count");
    for (uint64_t i = 0; i < n; ++i) {
      DecodedShard::Slice s;
      uint64_t count = 0;
      s.name = LoadName(ar);
      ar >> s.total >> s.offset >> count;
      const auto expected = blob_sizes->find(s.name);
      if (expected == blob_sizes->end()) throw std::runtime_error("unknown blob " + s.name);
      if (s.total != expected->second || s.offset > s.total || count > s.total - s.offset) {
        throw std::runtime_error("slice of " + s.name + " does not fit the model");
      }
      s.data.resize(count);
      ar >> boost::serialization::make_binary_object(s.data.data(), count * sizeof(float));
      out->slices.push_back(std::move(s));
    }
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

template <typename T>
void Put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
}

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

std::string EncodeShard(const ShardToWrite& shard) {
  std::string out(kMagic, sizeof kMagic);
  Put<uint32_t>(out, kShardFormatVersion);
  Put<uint32_t>(out, shard.rank);
  Put<uint32_t>(out, shard.world);
  Put<uint32_t>(out, 0);
  Put<uint64_t>(out, shard.step);
  Put<uint64_t>(out, 0);  // payload length, patched below
  {
    boost::iostreams::stream<boost::iostreams::back_insert_device<std::string>> stream(out);
    // No Boost archive header: holdfast's own header carries the magic and
    // version, and Boost's would be a length-prefixed string read unchecked.
    boost::archive::binary_oarchive archive(stream, boost::archive::no_header);
    const Payload payload{&shard, nullptr, nullptr};
    archive << payload;
  }
  const uint64_t payload_bytes = out.size() - kShardHeaderBytes;
  std::memcpy(out.data() + 32, &payload_bytes, sizeof payload_bytes);
  return out;
}

StatusOr<DecodedShard> DecodeShard(std::string_view bytes,
                                   const std::map<std::string, uint64_t>& blob_sizes) {
  if (bytes.size() < kShardHeaderBytes || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return DataLossError("not a holdfast shard (bad magic)");
  }
  if (Get<uint32_t>(bytes, 8) != kShardFormatVersion) {
    return DataLossError("shard format version " + std::to_string(Get<uint32_t>(bytes, 8)) +
                         " is not supported (this holdfast reads version " +
                         std::to_string(kShardFormatVersion) + ")");
  }
  if (Get<uint64_t>(bytes, 32) != bytes.size() - kShardHeaderBytes) {
    return DataLossError("shard payload length does not match the file");
  }
  DecodedShard shard;
  try {
    boost::iostreams::stream<boost::iostreams::array_source> stream(
        bytes.data() + kShardHeaderBytes, bytes.size() - kShardHeaderBytes);
    boost::archive::binary_iarchive archive(stream, boost::archive::no_header);
    Payload payload{nullptr, &shard, &blob_sizes};
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
