// Content hashes (XXH3-64) used for weight fingerprints and integrity checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace holdfast {

uint64_t Xxh3(const void* data, size_t bytes);
inline uint64_t Xxh3(std::span<const float> values) {
  return Xxh3(values.data(), values.size_bytes());
}
inline uint64_t Xxh3(const std::string& s) { return Xxh3(s.data(), s.size()); }
// 16 lower-case hex digits.
std::string HexU64(uint64_t value);

}  // namespace holdfast
