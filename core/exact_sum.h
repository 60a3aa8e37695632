// Exact, grouping-independent metric sums (docs/layout-invariance.md).
//
// Each term is rounded once to a multiple of 2^-24; such multiples, held as
// doubles, add exactly while the sum stays below 2^29, in any order and
// grouping: a loss sum over rows, threads, batches or ranks (plain MPI_SUM
// on doubles) has the same bits however it is split.
#pragma once

namespace holdfast {

inline constexpr int kMetricGridBits = 24;
double RoundToMetricGrid(double value);

}  // namespace holdfast
