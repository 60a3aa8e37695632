// Exact, grouping-independent sums on an agreed grid (docs/layout-invariance.md).
//
// A value is rounded once to a multiple of 2^-s; such multiples, held as
// integer-valued doubles below 2^53, add exactly in any order and grouping,
// so a sum over micro-shards, threads or ranks (plain MPI_SUM on doubles) has
// the same bits however it is split. The grid exponent s comes from a bound
// on the sum that every rank can agree on with an integer max-reduce.
#pragma once

#include <cstdint>
#include <span>

namespace holdfast {

// The exponent e with bound <= 2^e, for a bound on |any partial sum| of a
// tensor. 0 gives kZeroExponent; inf or NaN gives kNonFiniteExponent. Agree
// on the max of every rank's value (a larger e is a coarser, safe grid).
int64_t BoundExponent(double bound);
inline constexpr int64_t kZeroExponent = -100000;
inline constexpr int64_t kNonFiniteExponent = 100000;

// The scale exponent s of the grid for an agreed bound exponent e: values
// are held as round(v * 2^s), and |sum| * 2^s < 2^53 for every partial sum.
// Clamped so that 2^s is a normal float.
int GridScale(int64_t bound_exponent);

// out[i] = float(grid[i] * 2^-s): the one rounding of an exact sum. With a
// non-finite bound exponent every element becomes NaN (a gradient that
// overflowed stays visibly broken, as the float path leaves it).
void GridToFloat(std::span<const double> grid, int64_t bound_exponent, std::span<float> out);

// Metric sums (losses, counts): each term is rounded to a fixed grid of
// 2^-24 and the rounded values added, so the sum does not depend on how the
// terms are split or grouped. Exact while the sum stays below 2^29.
inline constexpr int kMetricGridBits = 24;
double RoundToMetricGrid(double value);

}  // namespace holdfast
