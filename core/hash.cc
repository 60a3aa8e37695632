#include "core/hash.h"

// Compiled here, for this build's CPU (AVX2/AVX-512 with HOLDFAST_NATIVE),
// rather than called in Debian's generic SSE2 build of libxxhash: 3.6x the
// speed on 64 KiB chunks, the same digests. (GCC 12 warns falsely inside
// its own AVX-512 intrinsics, bug 105593.)
#define XXH_INLINE_ALL
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <xxhash.h>
#pragma GCC diagnostic pop

#include <cstdio>

namespace holdfast {

uint64_t Xxh3(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

std::string HexU64(uint64_t value) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(value));
  return buf;
}

}  // namespace holdfast
