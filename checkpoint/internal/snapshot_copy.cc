#include "checkpoint/internal/snapshot_copy.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>

#include "core/internal/xxhash_native.h"

namespace holdfast::internal {
namespace {

#if defined(__AVX512F__)
constexpr size_t kVector = 64;
void StreamVector(const std::byte* from, std::byte* to) {
  _mm512_stream_si512(reinterpret_cast<__m512i*>(to), _mm512_loadu_si512(from));
}
#elif defined(__AVX__)
constexpr size_t kVector = 32;
void StreamVector(const std::byte* from, std::byte* to) {
  _mm256_stream_si256(reinterpret_cast<__m256i*>(to),
                      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from)));
}
#elif defined(__SSE2__)
constexpr size_t kVector = 16;
void StreamVector(const std::byte* from, std::byte* to) {
  _mm_stream_si128(reinterpret_cast<__m128i*>(to),
                   _mm_loadu_si128(reinterpret_cast<const __m128i*>(from)));
}
#endif

// The copy without its fence: ordinary stores up to the first destination
// address the vector stores accept, streaming stores, ordinary stores after.
// Without streaming stores (not x86): memcpy.
void CopyUnfenced(const std::byte* from, std::byte* to, size_t n) {
#if defined(__SSE2__)
  size_t i = std::min(n, (kVector - reinterpret_cast<uintptr_t>(to) % kVector) % kVector);
  std::memcpy(to, from, i);
  for (; i + 4 * kVector <= n; i += 4 * kVector) {
    for (size_t k = 0; k < 4 * kVector; k += kVector) StreamVector(from + i + k, to + i + k);
  }
  std::memcpy(to + i, from + i, n - i);
#else
  std::memcpy(to, from, n);
#endif
}

void Fence() {
#if defined(__SSE2__)
  _mm_sfence();  // streaming stores are weakly ordered
#endif
}

}  // namespace

void StreamingCopy(const std::byte* from, std::byte* to, size_t n) {
  CopyUnfenced(from, to, n);
  Fence();
}

uint64_t StreamingCopyAndHash(const std::byte* from, std::byte* to, size_t n) {
  constexpr size_t kStep = 4096;  // well inside any first-level data cache
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (size_t i = 0; i < n; i += kStep) {
    const size_t len = std::min(kStep, n - i);
    CopyUnfenced(from + i, to + i, len);
    XXH3_64bits_update(&state, from + i, len);
  }
  Fence();
  return XXH3_64bits_digest(&state);
}

}  // namespace holdfast::internal
