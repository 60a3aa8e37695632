// The shard file's layout and checksum (checkpoint/internal/shard_format.h):
// where each slice lands, the chunked checksum, and the chunk digests an
// asynchronous save computes while it copies.
#include "checkpoint/internal/shard_format.h"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "core/hash.h"

namespace holdfast::internal {
namespace {

constexpr size_t kChunk = kChecksumChunkBytes;

// A chief's shard with counters, values and slices of awkward sizes, names
// of odd lengths and one slice spanning many checksum chunks.
class ShardFormatTest : public ::testing::Test {
 protected:
  ShardFormatTest() {
    for (size_t floats : {size_t{3}, size_t{5 * kChunk / 4 + 7}, size_t{0}, size_t{kChunk + 1}}) {
      std::vector<float> v(floats);
      for (size_t i = 0; i < floats; ++i) v[i] = static_cast<float>(i * 0.5 + values_.size());
      values_.push_back(std::move(v));
    }
    shard_.rank = 0;
    shard_.world = 2;
    shard_.step = 1234;
    shard_.counters = &counters_;
    shard_.values = &scalars_;
    const std::vector<std::string> names = {"a", "dense_0/kernel", "optimizer/m/b", "xyz"};
    for (size_t i = 0; i < values_.size(); ++i) {
      shard_.slices.push_back({names[i],
                               values_[i].size() * 2,
                               values_[i].size(),
                               std::as_bytes(std::span<const float>(values_[i])),
                               {}});
    }
  }

  std::vector<std::vector<float>> values_;
  std::map<std::string, int64_t> counters_ = {{"epoch", 3}, {"batch", 17}};
  std::map<std::string, double> scalars_ = {{"loss_sum", 2.5}};
  ShardToWrite shard_;
};

TEST_F(ShardFormatTest, SliceFileOffsetsPointAtEachSlicesBytes) {
  const std::string file = EncodeShard(shard_);
  const std::vector<uint64_t> offsets = SliceFileOffsets(shard_);
  ASSERT_EQ(offsets.size(), shard_.slices.size());
  uint64_t previous = kShardHeaderBytes;
  for (size_t i = 0; i < offsets.size(); ++i) {
    SCOPED_TRACE(shard_.slices[i].name);
    const std::span<const std::byte> bytes = shard_.slices[i].data;
    EXPECT_GT(offsets[i], previous);  // after the header and the slice's own fields
    ASSERT_LE(offsets[i] + bytes.size(), file.size());
    EXPECT_EQ(std::memcmp(file.data() + offsets[i], bytes.data(), bytes.size()), 0);
    previous = offsets[i] + bytes.size();
  }
}

TEST_F(ShardFormatTest, ChecksumIsTheXxh3OfTheChunksDigests) {
  const std::string file = EncodeShard(shard_);
  ASSERT_GT(file.size(), 3 * kChunk);
  std::vector<uint64_t> digests;
  for (size_t at = 0; at < file.size(); at += kChunk) {
    digests.push_back(Xxh3(file.data() + at, std::min(kChunk, file.size() - at)));
  }
  const uint64_t expected = Xxh3(digests.data(), digests.size() * sizeof(uint64_t));
  EXPECT_EQ(ShardChecksum(file), expected);
  EXPECT_EQ(ShardChecksum(file, 1), Xxh3(file.data(), file.size()));  // the old checksum

  // What WriteShard reports, streaming, is the same.
  class Collect final : public WritableFile {
   public:
    Status Append(std::span<const char> data) override {
      out.append(data.data(), data.size());
      return Status::Ok();
    }
    Status Sync() override { return Status::Ok(); }
    Status Close() override { return Status::Ok(); }
    std::string out;
  } collected;
  const StatusOr<WrittenShard> written = WriteShard(shard_, collected);
  ASSERT_TRUE(written.ok()) << written.status().ToString();
  EXPECT_EQ(collected.out, file);
  EXPECT_EQ(written->bytes, file.size());
  EXPECT_EQ(written->checksum, expected);
}

// The digests a snapshot computes for the chunks inside its slices stand in
// for hashing them: right ones give the same checksum, and a wrong one is
// taken as it is (so they are really used, and must be right).
TEST_F(ShardFormatTest, KnownChunkDigestsReplaceHashingThoseChunks) {
  const std::string file = EncodeShard(shard_);
  const uint64_t checksum = ShardChecksum(file);
  const std::vector<uint64_t> offsets = SliceFileOffsets(shard_);
  std::vector<std::vector<uint64_t>> known(shard_.slices.size());
  size_t whole_chunks = 0;
  for (size_t i = 0; i < offsets.size(); ++i) {
    const uint64_t end = offsets[i] + shard_.slices[i].data.size();
    for (uint64_t c = (offsets[i] + kChunk - 1) / kChunk; c < end / kChunk; ++c) {
      known[i].push_back(Xxh3(file.data() + c * kChunk, kChunk));
    }
    whole_chunks += known[i].size();
    shard_.slices[i].chunk_digests = known[i];
  }
  ASSERT_GE(whole_chunks, 2u);
  EXPECT_EQ(EncodeShard(shard_), file);
  class Discard final : public WritableFile {
   public:
    Status Append(std::span<const char>) override { return Status::Ok(); }
    Status Sync() override { return Status::Ok(); }
    Status Close() override { return Status::Ok(); }
  } discard;
  StatusOr<WrittenShard> written = WriteShard(shard_, discard);
  ASSERT_TRUE(written.ok());
  EXPECT_EQ(written->checksum, checksum);

  known[1].back() ^= 1;
  written = WriteShard(shard_, discard);
  ASSERT_TRUE(written.ok());
  EXPECT_NE(written->checksum, checksum);
}

}  // namespace
}  // namespace holdfast::internal
