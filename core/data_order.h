// The deterministic data order: which samples form global batch b of epoch e.
//
// Epoch e's order is a Fisher-Yates permutation drawn from (seed, e) with
// PhiloxStream; global batch b is perm[b*B, min((b+1)*B, n)). A training
// position is therefore just (epoch, batch), global, and independent of the
// number of ranks that share the batch.
#pragma once

#include <cstdint>
#include <vector>

namespace holdfast {

// A permutation of [0, n) determined by (seed, epoch) alone. n < 2^32.
std::vector<uint32_t> EpochPermutation(uint64_t seed, int64_t epoch, uint32_t n);

// Half-open index range [begin, end) into an epoch's order.
struct Range {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const Range&) const = default;
};

// How an epoch of n samples is cut into global batches of batch_size.
class BatchPlan {
 public:
  // drop_remainder: drop the last batch when it is smaller than batch_size.
  BatchPlan(int64_t num_samples, int64_t batch_size, bool drop_remainder);

  int64_t num_samples() const { return num_samples_; }
  int64_t batch_size() const { return batch_size_; }
  int64_t num_batches() const { return num_batches_; }
  // Positions in the epoch order covered by global batch `batch`.
  Range Batch(int64_t batch) const;

 private:
  int64_t num_samples_, batch_size_, num_batches_;
};

// The contiguous part of a global batch that replica `rank` of `world_size`
// takes: sizes differ by at most one, earlier ranks take the extra samples.
// Offsets are relative to the start of the batch, so `begin` is also the
// global row index of the slice's first sample within the batch.
Range ReplicaSlice(int64_t batch_rows, int rank, int world_size);

}  // namespace holdfast
