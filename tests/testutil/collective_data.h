// Test data for collectives, shared by the in-process and the mpirun tests:
// integer-valued inputs (exact float sums), a different pattern on every
// rank, and the expected reductions computed independently of distribute/.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <vector>

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

// An all-gather's parts that are not adjacent: in reverse rank order, 3
// bytes apart, rank r sending r * n / 2 bytes (rank 0 none), so that
// neither the order nor the gaps nor an empty part may be taken for granted.
inline std::vector<Communicator::Part> ScatteredParts(int world, size_t n) {
  std::vector<Communicator::Part> parts(static_cast<size_t>(world));
  size_t at = 3;
  for (int r = world - 1; r >= 0; --r) {
    parts[static_cast<size_t>(r)] = {at, static_cast<size_t>(r) * n / 2};
    at += parts[static_cast<size_t>(r)].bytes + 3;
  }
  return parts;
}

// The buffer of ScatteredParts on rank `rank` before the all-gather: its own
// part holds AllGatherByte(rank, i), every other byte 0xEE. Afterwards every
// part must hold its sender's bytes and the gaps still 0xEE.
inline constexpr unsigned char kGapByte = 0xEE;
inline unsigned char AllGatherByte(int rank, size_t i) {
  return static_cast<unsigned char>((i * 31 + static_cast<size_t>(rank) * 7) % 251);
}
inline std::vector<unsigned char> AllGatherBuffer(const std::vector<Communicator::Part>& parts,
                                                  int rank) {
  size_t end = 3;
  for (const Communicator::Part& p : parts) end = std::max(end, p.at + p.bytes + 3);
  std::vector<unsigned char> buffer(end, kGapByte);
  const Communicator::Part& own = parts[static_cast<size_t>(rank)];
  for (size_t i = 0; i < own.bytes; ++i) buffer[own.at + i] = AllGatherByte(rank, i);
  return buffer;
}
// The number of bytes of `buffer` that differ from what the all-gather
// must leave (0 when it is right).
inline size_t AllGatherErrors(const std::vector<Communicator::Part>& parts,
                              const std::vector<unsigned char>& buffer) {
  std::vector<unsigned char> expected(buffer.size(), kGapByte);
  for (size_t r = 0; r < parts.size(); ++r) {
    for (size_t i = 0; i < parts[r].bytes; ++i) {
      expected[parts[r].at + i] = AllGatherByte(static_cast<int>(r), i);
    }
  }
  size_t wrong = 0;
  for (size_t i = 0; i < buffer.size(); ++i) wrong += buffer[i] != expected[i];
  return wrong;
}

}  // namespace holdfast::testing
