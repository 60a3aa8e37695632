// A dense layer's parameter gradients on an exact grid
// (docs/layout-invariance.md, rules 2-4): the same bits however the rows are
// split over threads and ranks.
#pragma once

#include <cstdint>
#include <span>

namespace holdfast::internal {

// x (rows x in) and dy (rows x out) are row-major; the rows are split into
// micro-shards at shard_offsets (ascending, first 0, last rows). For every
// micro-shard t the float partials
//   pk[i][j] = chain over its rows r ascending of fma(x[r][i], dy[r][j], .)
//   pb[j]    = chain over its rows r ascending of (dy[r][j] + .)
// are rounded to the nearest point of the grids 2^-kernel_scale and
// 2^-bias_scale and summed exactly over t into kernel_grid (in x out) and
// bias_grid (out), as integer-valued doubles (overwritten, not accumulated).
//
// With round_each_row the micro-shards play no part: every row's exact
// product x[r][i] * dy[r][j] (and dy[r][j]) is rounded down to the grid and
// the rounded values summed exactly, i.e.
//   kernel_grid[i][j] = sum over r of floor(x[r][i] * dy[r][j] * 2^kernel_scale).
// Twice the multiply-adds of a float chain (they run in double), but no
// per-micro-shard conversion: the cheaper rule when micro-shards are short
// (see RoundsEachRow in core/layers.h).
struct MicroShardGradient {
  const float* x;
  const float* dy;
  int64_t in, out;
  std::span<const int64_t> shard_offsets;
  int kernel_scale, bias_scale;
  double* kernel_grid;
  double* bias_grid;
  bool round_each_row = false;
};
void MicroShardDenseGradient(const MicroShardGradient& g);
void ReferenceMicroShardDenseGradient(const MicroShardGradient& g);

// max over rows r of (max_i |x[r][i]|) * (max_j |dy[r][j]|), and max over
// rows of max_j |dy[r][j]| (the per-row factors of the gradients' bounds).
// NaN or inf anywhere in x or dy gives inf for both (so every replica then
// agrees on a non-finite grid and the gradient becomes NaN the same way on
// any layout). Exact: a max does not depend on grouping.
struct RowBounds {
  double kernel = 0;
  double bias = 0;
};
RowBounds DenseRowBounds(const float* x, const float* dy, int64_t rows, int64_t in, int64_t out);

}  // namespace holdfast::internal
