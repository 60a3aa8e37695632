// Test data for collectives, shared by the in-process and the mpirun tests:
// integer-valued inputs (exact float sums), a different pattern on every
// rank, and the expected reductions computed independently of distribute/.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "distribute/communicator.h"

namespace holdfast::testing {

// Values in [-100, 100].
inline double CollectiveValue(int rank, size_t i) {
  return static_cast<double>(static_cast<int64_t>((i * 7 + static_cast<size_t>(rank) * 13) % 201) -
                             100);
}

// Rank `rank`'s element i. int64 values reach beyond 2^53, where a reduction
// through double would lose the low bits.
template <typename T>
T CollectiveInput(int rank, size_t i) {
  if constexpr (std::is_same_v<T, int64_t>) {
    return (int64_t{1} << 56) * ((static_cast<int64_t>(i) + rank) % 5 - 2) +
           static_cast<int64_t>(CollectiveValue(rank, i));
  } else {
    return static_cast<T>(CollectiveValue(rank, i));
  }
}

template <typename T>
T CollectiveExpected(int world, size_t i, ReduceOp op) {
  T acc = CollectiveInput<T>(0, i);
  for (int r = 1; r < world; ++r) {
    const T v = CollectiveInput<T>(r, i);
    acc = op == ReduceOp::kSum   ? acc + v
          : op == ReduceOp::kMax ? std::max(acc, v)
                                 : std::min(acc, v);
  }
  return acc;
}

template <typename T>
constexpr DataType DataTypeOf() {
  if constexpr (std::is_same_v<T, float>) return DataType::kFloat32;
  if constexpr (std::is_same_v<T, double>) return DataType::kFloat64;
  return DataType::kInt64;
}

}  // namespace holdfast::testing
