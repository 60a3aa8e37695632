// Communicator: the collectives a data-parallel job needs, behind a small
// seam (as in gloo). Implementations: MpiCommunicator (real ranks),
// LocalCommunicator (one process, no MPI) and, for tests, in-process ranks
// running as threads (distribute/thread_communicator.h).
//
// Ordering contract: every rank issues the same collectives in the same
// order with the same element counts. Only distribute/ calls MPI.
// Threading: a communicator may be used from any one thread at a time (the
// caller serialises; MirroredStrategy hands it between its training and
// sync threads).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/status.h"

namespace holdfast {

enum class DataType { kFloat32, kFloat64, kInt64 };
enum class ReduceOp { kSum, kMax, kMin };

size_t DataTypeSize(DataType type);

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "local", "threads".
  virtual std::string kind() const = 0;

  // In place: every rank's `count` elements are combined element-wise with
  // `op`; all ranks end with the same result. count may be 0.
  virtual void AllReduce(void* data, size_t count, DataType type, ReduceOp op) = 0;
  // Root's `bytes` bytes are copied to every rank's buffer of the same size.
  virtual void Broadcast(void* data, size_t bytes, int root) = 0;
  // Every rank's `bytes`; the root receives all of them in rank order,
  // others an empty vector. Sizes may differ between ranks.
  virtual std::vector<std::string> Gather(const std::string& bytes, int root) = 0;
  // One rank's bytes in an all-gather: [at, at + bytes) of the buffer.
  struct Part {
    size_t at = 0, bytes = 0;
  };
  // Parts that follow each other in rank order: rank r's bytes are
  // [offsets[r], offsets[r + 1]) (offsets has one entry more than ranks).
  static std::vector<Part> Consecutive(std::span<const size_t> offsets);
  // In place: rank r holds parts[r] of `data` (one part per rank, the same
  // on every rank, none overlapping); afterwards every rank holds all of
  // them. By default one Broadcast per rank.
  virtual void AllGather(void* data, std::span<const Part> parts);
  virtual void Barrier() = 0;
  // Ends the whole job (every rank) with `exit_code` after printing `why`
  // (one line, as given) on stderr. For an error this rank may have alone:
  // returning or finalising instead would leave the others waiting forever
  // in their next collective. Never returns.
  [[noreturn]] virtual void Abort(int exit_code, const std::string& why) = 0;
  // The training step now in progress, for diagnostics (the watchdog names
  // it). Default: ignored.
  virtual void NoteStep(int64_t /*step*/) {}

  void AllReduceSum(std::span<float> v) {
    AllReduce(v.data(), v.size(), DataType::kFloat32, ReduceOp::kSum);
  }
  void AllReduceSum(std::span<double> v) {
    AllReduce(v.data(), v.size(), DataType::kFloat64, ReduceOp::kSum);
  }
  void AllReduceMax(std::span<int64_t> v) {
    AllReduce(v.data(), v.size(), DataType::kInt64, ReduceOp::kMax);
  }
  void AllReduceMin(std::span<int64_t> v) {
    AllReduce(v.data(), v.size(), DataType::kInt64, ReduceOp::kMin);
  }
  // Per element, the minimum and maximum over ranks of `values`, found in
  // one collective (max of v and of ~v, since ~max(~v) = min(v)). Equal
  // min and max mean every rank holds the same value.
  struct MinMax {
    std::vector<int64_t> min, max;
  };
  MinMax AllReduceMinMax(std::span<const int64_t> values);
  // Broadcast of a string whose length only the root knows.
  std::string BroadcastString(const std::string& s, int root);
  // The root's `s` on every rank (the others pass anything): how one rank's
  // decision (a commit's outcome, a restore's error) reaches all of them.
  Status BroadcastStatus(const Status& s, int root);
  // Every rank's `s`, in rank order, on the root; empty elsewhere.
  std::vector<Status> GatherStatus(const Status& s, int root);
};

// Ends the whole job after an error this rank may have alone: prints
// "<program>: rank <r>: <what>" ("<program>: <what>" for one process) and
// aborts every rank with `exit_code` (see Communicator::Abort). For a
// program's top-level error handling.
[[noreturn]] void EndJob(Communicator& comm, int exit_code, const std::string& program,
                         const std::string& what);

// One process, world size 1: collectives are identities.
class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string kind() const override { return "local"; }
  void AllReduce(void*, size_t, DataType, ReduceOp) override {}
  void Broadcast(void*, size_t, int) override {}
  void AllGather(void*, std::span<const Part>) override {}
  std::vector<std::string> Gather(const std::string& bytes, int) override { return {bytes}; }
  void Barrier() override {}
  [[noreturn]] void Abort(int exit_code, const std::string& why) override;
};

// Applies `op` element-wise: acc[i] = op(acc[i], in[i]). For implementations
// that reduce by hand.
void ReduceInto(void* acc, const void* in, size_t count, DataType type, ReduceOp op);

}  // namespace holdfast
