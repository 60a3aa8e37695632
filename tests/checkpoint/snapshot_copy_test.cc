// The asynchronous snapshot's copy (checkpoint/internal/snapshot_copy.h):
// the same bytes as memcpy and, with the hash, the same digest as XXH3 of
// the source, whatever the length and the alignment of either side.
#include "checkpoint/internal/snapshot_copy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/hash.h"

namespace holdfast::internal {
namespace {

// Lengths around the vector width, the unrolled loop, the hash's 4 KiB
// steps and a checksum chunk; offsets that misalign the source, the
// destination or both.
TEST(SnapshotCopyTest, CopiesAndHashesLikeMemcpyAndXxh3) {
  std::vector<std::byte> from(70000 + 128), to(70000 + 128);
  for (size_t i = 0; i < from.size(); ++i) from[i] = static_cast<std::byte>((i * 131 + 7) % 251);
  for (size_t n :
       {size_t{0}, size_t{1}, size_t{15}, size_t{64}, size_t{255}, size_t{256}, size_t{4095},
        size_t{4096}, size_t{4097}, size_t{12289}, size_t{65536}, size_t{70000}}) {
    for (size_t from_offset : {size_t{0}, size_t{3}, size_t{64}}) {
      for (size_t to_offset : {size_t{0}, size_t{1}, size_t{40}, size_t{64}}) {
        SCOPED_TRACE(testing::Message()
                     << n << " bytes, source +" << from_offset << ", destination +" << to_offset);
        const std::byte* source = from.data() + from_offset;
        std::fill(to.begin(), to.end(), std::byte{0xee});
        StreamingCopy(source, to.data() + to_offset, n);
        EXPECT_EQ(std::memcmp(to.data() + to_offset, source, n), 0);
        EXPECT_EQ(to[to_offset + n], std::byte{0xee}) << "wrote past the end";
        if (to_offset > 0) {
          EXPECT_EQ(to[to_offset - 1], std::byte{0xee}) << "wrote before the start";
        }

        std::fill(to.begin(), to.end(), std::byte{0xee});
        EXPECT_EQ(StreamingCopyAndHash(source, to.data() + to_offset, n), Xxh3(source, n));
        EXPECT_EQ(std::memcmp(to.data() + to_offset, source, n), 0);
        EXPECT_EQ(to[to_offset + n], std::byte{0xee}) << "wrote past the end";
      }
    }
  }
}

}  // namespace
}  // namespace holdfast::internal
