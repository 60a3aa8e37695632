// What the fixed-order product and the exact-gradient kernels share (only
// their .cc files include it): the register tile, its FMA step, the tile
// sizes and the per-thread packing buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HOLDFAST_FIXED_ORDER_AVX2 1
#endif

namespace holdfast::internal {

// Register tile 6 x 16 (twelve 8-float accumulators), K pieces of 256 (a B
// panel of 16 KiB stays in L1), A blocks of 144 rows (144 KiB in L2). These
// choose speed only: the bits are fixed by the chain order.
constexpr int64_t kMr = 6, kNr = 16, kKc = 256, kMc = 144;

inline int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelFlops = int64_t{1} << 16;

// A packing buffer of this thread, reused from call to call (which: 0..2),
// of floats (the products, the chains) or doubles (row rounding).
template <typename T = float>
inline T* ThreadBuffer(int which, size_t n) {
  thread_local std::vector<T> buffers[3];
  std::vector<T>& b = buffers[which];
  if (b.size() < n) b.resize(n);
  return b.data();
}

#ifdef HOLDFAST_FIXED_ORDER_AVX2

// A 6 x 16 register tile: twelve 8-float accumulators, c[2*i + h] holding
// row i, columns 8h..8h+7. Fully inlined and unrolled, they stay in registers.
struct RegisterTile {
  __m256 c[2 * kMr];
};

// One link of every chain of the tile: c[i][j] = fma(a[i], b[j], c[i][j]).
__attribute__((always_inline)) inline void FmaStep(RegisterTile& t, const float* a,
                                                   const float* b) {
  const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
  for (int i = 0; i < kMr; ++i) {
    const __m256 ai = _mm256_broadcast_ss(a + i);
    t.c[2 * i] = _mm256_fmadd_ps(ai, b0, t.c[2 * i]);
    t.c[2 * i + 1] = _mm256_fmadd_ps(ai, b1, t.c[2 * i + 1]);
  }
}

#endif

}  // namespace holdfast::internal
