#include "core/internal/exact_gradient.h"

#include <omp.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/check.h"
#include "core/internal/fixed_order_kernel.h"

namespace holdfast::internal {

// ---- Weight gradients on the grid ------------------------------------------------

namespace {

// The dW tile loop: a task owns dW columns [j0, j0 + jw) and rows [i0, i0+iw).
constexpr int64_t kGradColumns = 128;  // a packed dY block of rows x 128 floats

// dy columns [j0, j0+jw) of every row as panels of kNr: dp[(q*rows + r)*kNr + jj].
void PackDy(const float* dy, int64_t rows, int64_t out, int64_t j0, int64_t jw, float* dp) {
  for (int64_t q = 0; q * kNr < jw; ++q) {
    const int64_t cols = std::min(kNr, jw - q * kNr);
    for (int64_t r = 0; r < rows; ++r) {
      float* dst = dp + (q * rows + r) * kNr;
      if (cols == kNr) {  // a constant size: inlined moves, not a call
        std::memcpy(dst, dy + r * out + j0 + q * kNr, sizeof(float) * kNr);
        continue;
      }
      std::memcpy(dst, dy + r * out + j0 + q * kNr, sizeof(float) * cols);
      for (int64_t jj = cols; jj < kNr; ++jj) dst[jj] = 0.0f;
    }
  }
}

// x columns [i0, i0+6) of every row, zero past `irows`: xp[r*kMr + ii].
void PackXTile(const float* x, int64_t rows, int64_t in, int64_t i0, int64_t irows, float* xp) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t ii = 0; ii < kMr; ++ii) xp[r * kMr + ii] = ii < irows ? x[r * in + i0 + ii] : 0.0f;
  }
}

#ifdef HOLDFAST_FIXED_ORDER_AVX2

// grid[0..8) += round(v * scale), as integer-valued doubles.
inline void AddToGrid(__m256 v, __m256 scale, double* grid) {
  const __m256 t =
      _mm256_round_ps(_mm256_mul_ps(v, scale), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(t));
  const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1));
  _mm256_store_pd(grid, _mm256_add_pd(_mm256_load_pd(grid), lo));
  _mm256_store_pd(grid + 4, _mm256_add_pd(_mm256_load_pd(grid + 4), hi));
}

// The twelve 8-float vectors of a 6 x 16 tile's partial, waiting to go
// onto the grid while the next micro-shard's chains run (the conversions use
// other execution ports than the FMAs, so they overlap).
struct PendingTile {
  alignas(32) float values[kMr * kNr];
  int converted = kMr * kNr / 8;  // vectors of `values` already on the grid
};

inline void ConvertOne(PendingTile& p, __m256 scale, double* g) {
  const int v = p.converted++;
  AddToGrid(_mm256_load_ps(p.values + 8 * v), scale, g + 8 * v);
}

// For rows [r0, r1): the chains of a 6 x 16 tile from packed x (xp) and dy
// (dp), left in `pending`, whose previous contents go onto the grid tile
// g[6][16] meanwhile, one vector per row.
void ShardTile(const float* xp, const float* dp, int64_t r0, int64_t r1, float scale,
               PendingTile& pending, double* g) {
  const __m256 s = _mm256_set1_ps(scale);
  RegisterTile t;
#pragma GCC unroll 12
  for (int v = 0; v < 2 * kMr; ++v) t.c[v] = _mm256_setzero_ps();
  constexpr int kVectors = kMr * kNr / 8;
  const float* ap = xp + r0 * kMr;
  const float* bp = dp + r0 * kNr;
  for (int64_t r = r0; r < r1; ++r, ap += kMr, bp += kNr) {
    FmaStep(t, ap, bp);
    if (pending.converted < kVectors) ConvertOne(pending, s, g);
  }
  while (pending.converted < kVectors) ConvertOne(pending, s, g);
#pragma GCC unroll 12
  for (int v = 0; v < 2 * kMr; ++v) _mm256_store_ps(pending.values + 8 * v, t.c[v]);
  pending.converted = 0;
}

// Puts the last micro-shard's partial onto the grid.
void FlushTile(PendingTile& pending, float scale, double* g) {
  const __m256 s = _mm256_set1_ps(scale);
  while (pending.converted < kMr * kNr / 8) ConvertOne(pending, s, g);
}

#else

struct PendingTile {};
void FlushTile(PendingTile&, float, double*) {}
void ShardTile(const float* xp, const float* dp, int64_t r0, int64_t r1, float scale, PendingTile&,
               double* g) {
  for (int64_t i = 0; i < kMr; ++i) {
    for (int64_t j = 0; j < kNr; ++j) {
      float acc = 0.0f;
      for (int64_t r = r0; r < r1; ++r) acc = std::fma(xp[r * kMr + i], dp[r * kNr + j], acc);
      g[i * kNr + j] += static_cast<double>(std::nearbyint(acc * scale));
    }
  }
}

#endif

void KernelGradientBlock(const MicroShardGradient& g, int64_t rows, int64_t i0, int64_t iw,
                         int64_t j0, int64_t jw) {
  float* dp = ThreadBuffer(0, static_cast<size_t>(CeilDiv(jw, kNr) * kNr * rows));
  float* xp = ThreadBuffer(1, static_cast<size_t>(rows * kMr));
  PackDy(g.dy, rows, g.out, j0, jw, dp);
  const float scale = std::ldexp(1.0f, g.kernel_scale);
  const size_t shards = g.shard_offsets.size() - 1;
  alignas(64) double tile[kMr * kNr];
  for (int64_t p = 0; p * kMr < iw; ++p) {
    const int64_t irows = std::min(kMr, iw - p * kMr);
    const int64_t i = i0 + p * kMr;
    PackXTile(g.x, rows, g.in, i, irows, xp);
    for (int64_t q = 0; q * kNr < jw; ++q) {
      const int64_t cols = std::min(kNr, jw - q * kNr);
      std::fill(tile, tile + kMr * kNr, 0.0);
      const float* dpanel = dp + q * rows * kNr;
      PendingTile pending;
      for (size_t t = 0; t < shards; ++t) {
        ShardTile(xp, dpanel, g.shard_offsets[t], g.shard_offsets[t + 1], scale, pending, tile);
      }
      FlushTile(pending, scale, tile);
      double* out = g.kernel_grid + i * g.out + j0 + q * kNr;
      for (int64_t ii = 0; ii < irows; ++ii) {
        std::memcpy(out + ii * g.out, tile + ii * kNr, sizeof(double) * cols);
      }
    }
  }
}

void BiasGradient(const MicroShardGradient& g) {
  const float scale = std::ldexp(1.0f, g.bias_scale);
  const size_t shards = g.shard_offsets.size() - 1;
  for (int64_t j = 0; j < g.out; ++j) g.bias_grid[j] = 0.0;
  // Column-wise chains, each over a shard's rows in order (vectorised across j).
  std::vector<float> acc(static_cast<size_t>(g.out));
  for (size_t t = 0; t < shards; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t r = g.shard_offsets[t]; r < g.shard_offsets[t + 1]; ++r) {
      const float* row = g.dy + r * g.out;
      for (int64_t j = 0; j < g.out; ++j) acc[j] = acc[j] + row[j];
    }
    for (int64_t j = 0; j < g.out; ++j) {
      g.bias_grid[j] += static_cast<double>(std::nearbyint(acc[j] * scale));
    }
  }
}

// ---- Weight gradients, each row rounded (round_each_row) -------------------------
//
// An anchored accumulator: the doubles in [2^52 u, 2^53 u) are exactly the
// multiples of u = 2^-s, so with A = 1.5 * 2^52 u + S (S a multiple of u,
// |S| < 2^51 u) and the FPU rounding toward -inf, fma(x, dy, A) is
// A + floor(x * dy / u) * u: the product (exact in double) rounded down to
// the grid and added exactly, in one instruction. Rounding down, unlike
// rounding to nearest (whose ties go to the even neighbour, which depends on
// S), does not depend on what was accumulated before, so the sum of the
// rounded rows is the same however rows are grouped.

constexpr int64_t kRowMr = 6, kRowNr = 8;  // a 6 x 8 tile of doubles: twelve 4-double accumulators
constexpr int64_t kRowGradColumns = 64;    // a packed dY block of rows x 64 doubles

double Anchor(int scale) { return 1.5 * std::ldexp(1.0, 52 - scale); }

// An anchored accumulator's value in grid units: exact. Rounding down makes
// a zero difference -0; it is returned as +0, as a sum starting at 0 ends,
// so the sign of a zero gradient does not depend on the rows' grouping.
double GridUnits(double accumulator, double anchor, double up) {
  const double d = accumulator - anchor;
  return d == 0.0 ? 0.0 : d * up;
}

// Sets the calling thread's rounding toward -inf for its lifetime. Only the
// noinline functions called inside it depend on the mode (the compiler may
// move arithmetic across fesetround, not into another function's body).
class RoundDownScope {
 public:
  RoundDownScope() : saved_(std::fegetround()) { std::fesetround(FE_DOWNWARD); }
  ~RoundDownScope() { std::fesetround(saved_); }
  RoundDownScope(const RoundDownScope&) = delete;
  RoundDownScope& operator=(const RoundDownScope&) = delete;

 private:
  int saved_;
};

// dy columns [j0, j0+jw) of every row as double panels of kRowNr:
// dp[(q*rows + r)*kRowNr + jj], zero past jw (conversions are exact).
void PackDyRows(const float* dy, int64_t rows, int64_t out, int64_t j0, int64_t jw, double* dp) {
  for (int64_t q = 0; q * kRowNr < jw; ++q) {
    const int64_t cols = std::min(kRowNr, jw - q * kRowNr);
    for (int64_t r = 0; r < rows; ++r) {
      double* dst = dp + (q * rows + r) * kRowNr;
      const float* src = dy + r * out + j0 + q * kRowNr;
      if (cols == kRowNr) {
        for (int64_t jj = 0; jj < kRowNr; ++jj) dst[jj] = src[jj];
        continue;
      }
      for (int64_t jj = 0; jj < kRowNr; ++jj) dst[jj] = jj < cols ? src[jj] : 0.0;
    }
  }
}

// x columns [i0, i0+irows) of every row as doubles, zero past irows: xp[r*kRowMr + ii].
void PackXRows(const float* x, int64_t rows, int64_t in, int64_t i0, int64_t irows, double* xp) {
  if (irows == kRowMr) {  // no padding: a fixed-size inner loop the compiler unrolls
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t ii = 0; ii < kRowMr; ++ii) xp[r * kRowMr + ii] = x[r * in + i0 + ii];
    }
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t ii = 0; ii < kRowMr; ++ii) {
      xp[r * kRowMr + ii] = ii < irows ? x[r * in + i0 + ii] : 0.0;
    }
  }
}

// tile[6][8] (row stride ldt) = the grid values (in units) of the sum over
// rows of xp (x) dp, each product rounded down: needs RoundDownScope.
__attribute__((noinline)) void RowRoundedTile(int64_t rows, const double* xp, const double* dp,
                                              double anchor, double up, double* tile, int64_t ldt) {
#ifdef HOLDFAST_FIXED_ORDER_AVX2
  const __m256d a = _mm256_set1_pd(anchor);
  __m256d c[2 * kRowMr];
#pragma GCC unroll 12
  for (int v = 0; v < 2 * kRowMr; ++v) c[v] = a;
  for (int64_t r = 0; r < rows; ++r, xp += kRowMr, dp += kRowNr) {
    const __m256d d0 = _mm256_loadu_pd(dp), d1 = _mm256_loadu_pd(dp + 4);
#pragma GCC unroll 6
    for (int i = 0; i < kRowMr; ++i) {
      const __m256d xi = _mm256_broadcast_sd(xp + i);
      c[2 * i] = _mm256_fmadd_pd(xi, d0, c[2 * i]);
      c[2 * i + 1] = _mm256_fmadd_pd(xi, d1, c[2 * i + 1]);
    }
  }
  // (A - anchor) is exact, and so is the product by 2^s; a zero, which
  // rounding down makes -0, is stored as +0 (as a sum starting at 0 ends).
  const __m256d u = _mm256_set1_pd(up), zero = _mm256_setzero_pd();
#pragma GCC unroll 12
  for (int v = 0; v < 2 * kRowMr; ++v) {
    const __m256d d = _mm256_sub_pd(c[v], a);
    _mm256_storeu_pd(tile + (v / 2) * ldt + 4 * (v % 2),
                     _mm256_and_pd(_mm256_mul_pd(d, u), _mm256_cmp_pd(d, zero, _CMP_NEQ_UQ)));
  }
#else
  double c[kRowMr * kRowNr];
  std::fill(c, c + kRowMr * kRowNr, anchor);
  for (int64_t r = 0; r < rows; ++r, xp += kRowMr, dp += kRowNr) {
    for (int64_t i = 0; i < kRowMr; ++i) {
      for (int64_t j = 0; j < kRowNr; ++j)
        c[i * kRowNr + j] = std::fma(xp[i], dp[j], c[i * kRowNr + j]);
    }
  }
  for (int64_t i = 0; i < kRowMr; ++i) {
    for (int64_t j = 0; j < kRowNr; ++j)
      tile[i * ldt + j] = GridUnits(c[i * kRowNr + j], anchor, up);
  }
#endif
}

void RowRoundedKernelBlock(const MicroShardGradient& g, int64_t rows, int64_t i0, int64_t iw,
                           int64_t j0, int64_t jw) {
  double* dp = ThreadBuffer<double>(0, static_cast<size_t>(CeilDiv(jw, kRowNr) * kRowNr * rows));
  double* xp = ThreadBuffer<double>(1, static_cast<size_t>(rows * kRowMr));
  PackDyRows(g.dy, rows, g.out, j0, jw, dp);
  alignas(32) double tile[kRowMr * kRowNr];
  const double anchor = Anchor(g.kernel_scale), up = std::ldexp(1.0, g.kernel_scale);
  const RoundDownScope round_down;
  for (int64_t p = 0; p * kRowMr < iw; ++p) {
    const int64_t irows = std::min(kRowMr, iw - p * kRowMr);
    const int64_t i = i0 + p * kRowMr;
    PackXRows(g.x, rows, g.in, i, irows, xp);
    for (int64_t q = 0; q * kRowNr < jw; ++q) {
      const int64_t cols = std::min(kRowNr, jw - q * kRowNr);
      const double* dpanel = dp + q * rows * kRowNr;
      double* out = g.kernel_grid + i * g.out + j0 + q * kRowNr;
      if (irows == kRowMr && cols == kRowNr) {
        RowRoundedTile(rows, xp, dpanel, anchor, up, out, g.out);
        continue;
      }
      RowRoundedTile(rows, xp, dpanel, anchor, up, tile, kRowNr);
      for (int64_t ii = 0; ii < irows; ++ii) {
        for (int64_t jj = 0; jj < cols; ++jj) out[ii * g.out + jj] = tile[ii * kRowNr + jj];
      }
    }
  }
}

// bias_grid[j] = the grid values of sum over rows of dy[r][j], each rounded
// down: needs RoundDownScope.
__attribute__((noinline)) void RowRoundedBias(const float* dy, int64_t rows, int64_t out, int scale,
                                              double* bias_grid) {
  const double anchor = Anchor(scale), up = std::ldexp(1.0, scale);
  for (int64_t j = 0; j < out; ++j) bias_grid[j] = anchor;
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = dy + r * out;
    for (int64_t j = 0; j < out; ++j) bias_grid[j] += static_cast<double>(row[j]);
  }
  for (int64_t j = 0; j < out; ++j) bias_grid[j] = GridUnits(bias_grid[j], anchor, up);
}

void CheckShards(const MicroShardGradient& g) {
  HOLDFAST_CHECK(!g.shard_offsets.empty() && g.shard_offsets.front() == 0,
                 "micro-shard offsets must start at 0");
  for (size_t t = 1; t < g.shard_offsets.size(); ++t) {
    HOLDFAST_CHECK(g.shard_offsets[t] >= g.shard_offsets[t - 1], "micro-shard offsets descend");
  }
}

// Runs block(i0, iw, j0, jw) over dW (in x out) cut into tasks: a task owns
// a column block of `columns` (its dY columns packed once) and a share of
// dW's rows, in whole tiles of `tile_rows`: enough tasks for two per thread.
template <typename Block>
void ForEachGradientBlock(const MicroShardGradient& g, int64_t rows, int64_t columns,
                          int64_t tile_rows, Block block) {
  const int threads = omp_get_max_threads();
  const int64_t jblocks = CeilDiv(g.out, columns);
  const int64_t isplits = std::min(CeilDiv(g.in, tile_rows), CeilDiv(2 * threads, jblocks));
  const int64_t irows = CeilDiv(CeilDiv(g.in, isplits), tile_rows) * tile_rows;
  const int64_t iblocks = CeilDiv(g.in, irows);
  const int64_t tasks = iblocks * jblocks;
  const bool parallel =
      tasks > 1 && threads > 1 && g.in * g.out * std::max<int64_t>(rows, 1) >= kParallelFlops;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t i0 = (t / jblocks) * irows, j0 = (t % jblocks) * columns;
    block(i0, std::min(irows, g.in - i0), j0, std::min(columns, g.out - j0));
  }
}

}  // namespace

void MicroShardDenseGradient(const MicroShardGradient& g) {
  CheckShards(g);
  const int64_t rows = g.shard_offsets.back();
  if (g.round_each_row) {
    ForEachGradientBlock(g, rows, kRowGradColumns, kRowMr,
                         [&](int64_t i0, int64_t iw, int64_t j0, int64_t jw) {
                           RowRoundedKernelBlock(g, rows, i0, iw, j0, jw);
                         });
    const RoundDownScope round_down;
    RowRoundedBias(g.dy, rows, g.out, g.bias_scale, g.bias_grid);
    return;
  }
  ForEachGradientBlock(g, rows, kGradColumns, kMr,
                       [&](int64_t i0, int64_t iw, int64_t j0, int64_t jw) {
                         KernelGradientBlock(g, rows, i0, iw, j0, jw);
                       });
  BiasGradient(g);
}

void ReferenceMicroShardDenseGradient(const MicroShardGradient& g) {
  CheckShards(g);
  if (g.round_each_row) {  // the definition, without the anchor or the rounding mode
    const int64_t rows = g.shard_offsets.back();
    const double kscale = std::ldexp(1.0, g.kernel_scale), bscale = std::ldexp(1.0, g.bias_scale);
    for (int64_t i = 0; i < g.in; ++i) {
      for (int64_t j = 0; j < g.out; ++j) {
        double sum = 0;  // of integers below 2^53: exact
        for (int64_t r = 0; r < rows; ++r) {
          sum += std::floor(static_cast<double>(g.x[r * g.in + i]) * g.dy[r * g.out + j] * kscale);
        }
        g.kernel_grid[i * g.out + j] = sum;
      }
    }
    for (int64_t j = 0; j < g.out; ++j) {
      double sum = 0;
      for (int64_t r = 0; r < rows; ++r) sum += std::floor(g.dy[r * g.out + j] * bscale);
      g.bias_grid[j] = sum;
    }
    return;
  }
  const float kscale = std::ldexp(1.0f, g.kernel_scale);
  const size_t shards = g.shard_offsets.size() - 1;
  for (int64_t i = 0; i < g.in; ++i) {
    for (int64_t j = 0; j < g.out; ++j) {
      double sum = 0;
      for (size_t t = 0; t < shards; ++t) {
        float acc = 0.0f;
        for (int64_t r = g.shard_offsets[t]; r < g.shard_offsets[t + 1]; ++r) {
          acc = std::fma(g.x[r * g.in + i], g.dy[r * g.out + j], acc);
        }
        sum += static_cast<double>(std::nearbyint(acc * kscale));
      }
      g.kernel_grid[i * g.out + j] = sum;
    }
  }
  const float bscale = std::ldexp(1.0f, g.bias_scale);
  for (int64_t j = 0; j < g.out; ++j) {
    double sum = 0;
    for (size_t t = 0; t < shards; ++t) {
      float acc = 0.0f;
      for (int64_t r = g.shard_offsets[t]; r < g.shard_offsets[t + 1]; ++r) {
        acc = acc + g.dy[r * g.out + j];
      }
      sum += static_cast<double>(std::nearbyint(acc * bscale));
    }
    g.bias_grid[j] = sum;
  }
}

namespace {

// The largest |v| of n floats as its bit pattern (sign cleared). For
// non-negative floats the bit patterns order as the values do, and every
// NaN or inf pattern is at least 0x7f800000: one integer max finds both the
// largest magnitude and whether any value is not finite, and vectorises.
uint32_t MaxMagnitudeBits(const float* v, int64_t n) {
  uint32_t m = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t bits;
    std::memcpy(&bits, v + i, sizeof bits);
    m = std::max(m, bits & 0x7fffffffu);
  }
  return m;
}

constexpr uint32_t kInfBits = 0x7f800000u;

float FromBits(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace

RowBounds DenseRowBounds(const float* x, const float* dy, int64_t rows, int64_t in, int64_t out) {
  RowBounds b;
  for (int64_t r = 0; r < rows; ++r) {
    const uint32_t mx = MaxMagnitudeBits(x + r * in, in), my = MaxMagnitudeBits(dy + r * out, out);
    if (mx >= kInfBits || my >= kInfBits) {  // a max would drop a NaN, and inf * 0 is NaN
      b.kernel = b.bias = std::numeric_limits<double>::infinity();
      return b;
    }
    b.kernel = std::max(b.kernel, static_cast<double>(FromBits(mx)) * FromBits(my));
    b.bias = std::max(b.bias, static_cast<double>(FromBits(my)));
  }
  return b;
}

}  // namespace holdfast::internal
