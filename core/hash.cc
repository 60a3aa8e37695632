#include "core/hash.h"

#include <cstdio>

#include "core/internal/xxhash_native.h"

namespace holdfast {

uint64_t Xxh3(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

std::string HexU64(uint64_t value) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(value));
  return buf;
}

}  // namespace holdfast
