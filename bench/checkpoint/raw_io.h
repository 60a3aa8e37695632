// The reference bench/checkpoint compares holdfast's checkpoints with: the
// same bytes written and read with plain sequential POSIX I/O, and the
// page-cache control (drop, then check with mincore) that makes a read cold.
// Every failure throws std::runtime_error naming the path.
#ifndef HOLDFAST_BENCH_CHECKPOINT_RAW_IO_H_
#define HOLDFAST_BENCH_CHECKPOINT_RAW_IO_H_

#include <span>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "distribute/communicator.h"

namespace checkpoint_bench {

// This rank's slice of every blob: the bytes its shard holds.
std::vector<std::span<std::byte>> MySlices(holdfast::Checkpoint& ckpt, int rank, int world);

// Where a raw write's time went on this rank.
struct RawWriteSplit {
  double write = 0, fsync = 0, fsync_dir = 0;
};

// The reference save: this rank's bytes to `path`, one sequential write
// loop, fsync, close; then (after every rank is done) the chief fsyncs `dir`
// so the new names are durable too. Collective.
RawWriteSplit RawWrite(holdfast::Communicator& comm, const std::string& path,
                       const std::vector<std::span<std::byte>>& slices, const std::string& dir);

// The reference restore: `path` read back into `slices`, in order.
void RawRead(const std::string& path, const std::vector<std::span<std::byte>>& slices);

// Asks the kernel to drop the (clean, fsynced) pages of every file under
// `dir` from the page cache.
void DropPageCache(const std::string& dir);

// The share of the pages of the files under `dir` that are in the page
// cache (mincore), and the worst file's name and share, for the record.
std::pair<double, std::string> ResidentShare(const std::string& dir);

}  // namespace checkpoint_bench

#endif  // HOLDFAST_BENCH_CHECKPOINT_RAW_IO_H_
