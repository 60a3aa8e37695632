#include "core/internal/fixed_order_gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HOLDFAST_FIXED_ORDER_AVX2 1
#endif

#include "core/check.h"

namespace holdfast::internal {
namespace {

// Register tile 6 x 16 (twelve 8-float accumulators), K pieces of 512 (a B
// panel of 32 KiB, in L1), A blocks of 144 rows (288 KiB, in L2). The longer
// K pieces halve how often a tile of C is stored and loaded again. These
// choose speed only: the bits are fixed by the chain order.
constexpr int64_t kMr = 6, kNr = 16, kKc = 512, kMc = 144;

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelFlops = int64_t{1} << 16;

// A packing buffer of this thread, reused from call to call (which: 0..2),
// aligned to a cache line so that no 32-byte load of a packed panel spans two.
float* ThreadBuffer(int which, size_t n) {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  thread_local std::unique_ptr<float, Free> buffers[3];
  thread_local size_t sizes[3] = {};
  if (sizes[which] < n) {
    const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    buffers[which].reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    HOLDFAST_CHECK(buffers[which] != nullptr, "no memory for a " << bytes << "-byte GEMM buffer");
    sizes[which] = n;
  }
  return buffers[which].get();
}

// dst[kk * dst_stride] = src[kk * src_stride] for kk < n: one element's run
// along the chains into its packed panel. A contiguous run also prefetches,
// a cache line at a time, `ahead`: the run packed two after this one. Those
// rows of X, dY and W come from memory, and the hardware prefetcher stops at
// every page. Measured by perf on the big layer at one thread, packing fell
// from ~25% to ~20% of X.W's samples and from ~33% to ~22% of dY.W^T's.
void PackRun(const float* src, int64_t src_stride, int64_t n, float* dst, int64_t dst_stride,
             const float* ahead) {
  if (src_stride != 1) {
    for (int64_t kk = 0; kk < n; ++kk) dst[kk * dst_stride] = src[kk * src_stride];
    return;
  }
  constexpr int64_t kLine = 64 / sizeof(float);
  for (int64_t k0 = 0; k0 < n; k0 += kLine) {
    __builtin_prefetch(ahead + k0);  // never faults, even past the matrix
    const int64_t end = std::min(n, k0 + kLine);
    for (int64_t kk = k0; kk < end; ++kk) dst[kk * dst_stride] = src[kk];
  }
}

// A block of an operand as panels R wide, the way the kernel reads them:
// element (i, kk) of the block, i < width along the panels and kk < kc along
// the chains, is origin[i * i_stride + kk * k_stride], and goes to
// panels[(p * kc + kk) * R + r] with i = p*R + r; zero past width.
template <int64_t R>
void PackPanels(const float* origin, int64_t i_stride, int64_t k_stride, int64_t width, int64_t kc,
                float* panels) {
  if (i_stride == 1) {  // a chain step's R elements are contiguous: copy whole lines
    for (int64_t kk = 0; kk < kc; ++kk) {
      const float* src = origin + kk * k_stride;
      for (int64_t p = 0; p * R < width; ++p) {
        float* dst = panels + (p * kc + kk) * R;
        const int64_t n = std::min(R, width - p * R);
        if (n == R) {  // a constant size: inlined moves, not a call
          std::memcpy(dst, src + p * R, sizeof(float) * R);
          continue;
        }
        std::memcpy(dst, src + p * R, sizeof(float) * n);
        for (int64_t r = n; r < R; ++r) dst[r] = 0.0f;
      }
    }
    return;
  }
  for (int64_t p = 0; p * R < width; ++p) {  // one run along the chain per element of a step
    float* dst = panels + p * kc * R;
    for (int64_t r = 0; r < R; ++r) {
      const int64_t i = p * R + r;
      if (i >= width) {
        for (int64_t kk = 0; kk < kc; ++kk) dst[kk * R + r] = 0.0f;
        continue;
      }
      const float* src = origin + i * i_stride;
      PackRun(src, k_stride, kc, dst + r, R, src + 2 * i_stride);
    }
  }
}

// A's rows [m0, m0+mc), columns [k0, k0+kc), as panels of kMr rows. Rows of
// X^T are X's columns, so X^T.dY reads whole rows of X; X.W and dY.W^T read
// each row of X or dY along its chain.
void PackA(StridedMatrix a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float* ap) {
  PackPanels<kMr>(a.data + m0 * a.row_stride + k0 * a.col_stride, a.row_stride, a.col_stride, mc,
                  kc, ap);
}

// B's rows [k0, k0+kc), columns [n0, n0+nc), as panels of kNr columns. X.W
// and X^T.dY read whole rows of W and dY; dY.W^T reads each row of W (a
// column of W^T) along its chain.
void PackB(StridedMatrix b, int64_t k0, int64_t kc, int64_t n0, int64_t nc, float* bp) {
  PackPanels<kNr>(b.data + k0 * b.row_stride + n0 * b.col_stride, b.col_stride, b.row_stride, nc,
                  kc, bp);
}

#ifdef HOLDFAST_FIXED_ORDER_AVX2

// c[R][16] (row stride ldc), R <= kMr rows of a micro-panel: continue
// (load_c) or start each element's chain, run kc more links, add bias (if
// given), store. acc[2*i + h] holds row i, columns 8h..8h+7; fully unrolled,
// the 2R accumulators stay in registers. An edge of fewer rows runs its own
// R instead of a full tile: a batch of 25 rows on a rank is 4 tiles and 1 row,
// not 5 tiles with a sixth of the work thrown away.
template <int R>
void KernelRows(int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc, bool load_c,
                const float* bias) {
  __m256 acc[2 * R];
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    acc[2 * i] = load_c ? _mm256_loadu_ps(c + i * ldc) : _mm256_setzero_ps();
    acc[2 * i + 1] = load_c ? _mm256_loadu_ps(c + i * ldc + 8) : _mm256_setzero_ps();
  }
  for (int64_t kk = 0; kk < kc; ++kk, ap += kMr, bp += kNr) {
    const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
#pragma GCC unroll 6
    for (int i = 0; i < R; ++i) {  // one link of every chain: c[i][j] = fma(a[i], b[j], c[i][j])
      const __m256 ai = _mm256_broadcast_ss(ap + i);
      acc[2 * i] = _mm256_fmadd_ps(ai, b0, acc[2 * i]);
      acc[2 * i + 1] = _mm256_fmadd_ps(ai, b1, acc[2 * i + 1]);
    }
  }
  const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
#pragma GCC unroll 6
  for (int i = 0; i < R; ++i) {
    // Without a bias nothing is added: x + 0 would turn -0 into +0.
    _mm256_storeu_ps(c + i * ldc, bias ? _mm256_add_ps(acc[2 * i], b0) : acc[2 * i]);
    _mm256_storeu_ps(c + i * ldc + 8, bias ? _mm256_add_ps(acc[2 * i + 1], b1) : acc[2 * i + 1]);
  }
}

void Kernel(int64_t rows, int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc,
            bool load_c, const float* bias) {
  static_assert(kMr == 6, "one case per row count");
  switch (rows) {
    case 6:
      return KernelRows<6>(kc, ap, bp, c, ldc, load_c, bias);
    case 5:
      return KernelRows<5>(kc, ap, bp, c, ldc, load_c, bias);
    case 4:
      return KernelRows<4>(kc, ap, bp, c, ldc, load_c, bias);
    case 3:
      return KernelRows<3>(kc, ap, bp, c, ldc, load_c, bias);
    case 2:
      return KernelRows<2>(kc, ap, bp, c, ldc, load_c, bias);
    default:
      return KernelRows<1>(kc, ap, bp, c, ldc, load_c, bias);
  }
}

#else

void Kernel(int64_t rows, int64_t kc, const float* ap, const float* bp, float* c, int64_t ldc,
            bool load_c, const float* bias) {
  float acc[kMr][kNr];
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < kNr; ++j) acc[i][j] = load_c ? c[i * ldc + j] : 0.0f;
  }
  for (int64_t kk = 0; kk < kc; ++kk) {
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < kNr; ++j) acc[i][j] = std::fma(ap[i], bp[j], acc[i][j]);
    }
    ap += kMr;
    bp += kNr;
  }
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < kNr; ++j) c[i * ldc + j] = bias ? acc[i][j] + bias[j] : acc[i][j];
  }
}

#endif

// One column block [n0, n0+nc) of c, every row, every K piece in order.
void GemmColumnBlock(int64_t m, int64_t k, StridedMatrix a, StridedMatrix b, const float* bias,
                     float* c, int64_t ldc, int64_t n0, int64_t nc) {
  const int64_t kc_max = std::min(k, kKc);
  float* bp = ThreadBuffer(0, static_cast<size_t>(kc_max * CeilDiv(nc, kNr) * kNr));
  float* ap = ThreadBuffer(1, static_cast<size_t>(kc_max * CeilDiv(std::min(m, kMc), kMr) * kMr));
  float* tile = ThreadBuffer(2, kMr * kNr);
  for (int64_t k0 = 0; k0 < k; k0 += kKc) {
    const int64_t kc = std::min(kKc, k - k0);
    const bool first = k0 == 0, last = k0 + kc == k;
    PackB(b, k0, kc, n0, nc, bp);
    for (int64_t m0 = 0; m0 < m; m0 += kMc) {
      const int64_t mc = std::min(kMc, m - m0);
      PackA(a, m0, mc, k0, kc, ap);
      for (int64_t q = 0; q * kNr < nc; ++q) {
        const int64_t cols = std::min(kNr, nc - q * kNr);
        const int64_t col = n0 + q * kNr;
        const float* bpanel = bp + q * kc * kNr;
        for (int64_t p = 0; p * kMr < mc; ++p) {
          const int64_t rows = std::min(kMr, mc - p * kMr);
          const float* apanel = ap + p * kc * kMr;
          float* ctile = c + (m0 + p * kMr) * ldc + col;
          // The next tile's rows of C, loaded while this one's chains run:
          // its loads at the kernel's start would otherwise wait on memory.
          // (A prefetch past the matrix never faults.)
          const float* next = (p + 1) * kMr < mc ? ctile + kMr * ldc : c + m0 * ldc + col + kNr;
          for (int64_t i = 0; i < kMr; ++i) {
            __builtin_prefetch(next + i * ldc, 1);
          }
          if (cols == kNr) {
            Kernel(rows, kc, apanel, bpanel, ctile, ldc, !first,
                   last && bias != nullptr ? bias + col : nullptr);
            continue;
          }
          // A tile short of columns runs on a copy; padded lanes are dropped.
          std::fill(tile, tile + kMr * kNr, 0.0f);
          if (!first) {
            for (int64_t i = 0; i < rows; ++i) {
              std::memcpy(tile + i * kNr, ctile + i * ldc, sizeof(float) * cols);
            }
          }
          Kernel(rows, kc, apanel, bpanel, tile, kNr, !first, nullptr);
          for (int64_t i = 0; i < rows; ++i) {
            for (int64_t j = 0; j < cols; ++j) {
              ctile[i * ldc + j] =
                  last && bias != nullptr ? tile[i * kNr + j] + bias[col + j] : tile[i * kNr + j];
            }
          }
        }
      }
    }
  }
}

}  // namespace

void FixedOrderGemm(int64_t m, int64_t n, int64_t k, StridedMatrix a, StridedMatrix b,
                    const float* bias, float* c, int64_t ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = bias ? 0.0f + bias[j] : 0.0f;
    }
    return;
  }
  // Column blocks of whole panels, at least two per thread when there are
  // enough, at most 512 columns (a packed B block of 1 MiB).
  const int threads = omp_get_max_threads();
  const int64_t panels = CeilDiv(n, kNr);
  const int64_t block_panels = std::clamp<int64_t>(CeilDiv(panels, 2 * threads), 1, 32);
  const int64_t blocks = CeilDiv(panels, block_panels);
  const bool parallel = blocks > 1 && threads > 1 && m * n * k >= kParallelFlops;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t n0 = blk * block_panels * kNr;
    GemmColumnBlock(m, k, a, b, bias, c, ldc, n0, std::min(n - n0, block_panels * kNr));
  }
}

void ReferenceGemm(int64_t m, int64_t n, int64_t k, StridedMatrix a, StridedMatrix b,
                   const float* bias, float* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int64_t p = 0; p < k; ++p) acc = std::fma(a.at(i, p), b.at(p, j), acc);
      c[i * ldc + j] = bias ? acc + bias[j] : acc;
    }
  }
}

}  // namespace holdfast::internal
