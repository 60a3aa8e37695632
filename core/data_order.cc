#include "core/data_order.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "core/random.h"

namespace holdfast {

std::vector<uint32_t> EpochPermutation(uint64_t seed, int64_t epoch, uint32_t n) {
  std::vector<uint32_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0u);
  PhiloxStream stream(seed, RandomDomain::kShuffle, static_cast<uint32_t>(epoch),
                      static_cast<uint32_t>(static_cast<uint64_t>(epoch) >> 32));
  // Fisher-Yates, written out here rather than std::shuffle, whose output
  // differs between standard libraries.
  for (uint32_t i = n; i > 1; --i) {
    const uint32_t j = stream.NextBelow(i);
    std::swap(perm[i - 1], perm[j]);
  }
  return perm;
}

BatchPlan::BatchPlan(int64_t num_samples, int64_t batch_size, bool drop_remainder)
    : num_samples_(num_samples), batch_size_(batch_size) {
  if (batch_size <= 0) throw std::invalid_argument("batch size must be positive");
  if (num_samples < 0) throw std::invalid_argument("sample count must not be negative");
  num_batches_ =
      drop_remainder ? num_samples / batch_size : (num_samples + batch_size - 1) / batch_size;
}

Range BatchPlan::Batch(int64_t batch) const {
  const int64_t begin = batch * batch_size_;
  return {begin, std::min(begin + batch_size_, num_samples_)};
}

Range ReplicaSlice(int64_t batch_rows, int rank, int world_size) {
  const int64_t base = batch_rows / world_size, extra = batch_rows % world_size;
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

}  // namespace holdfast
