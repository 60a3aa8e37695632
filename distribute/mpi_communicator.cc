#include "distribute/mpi_communicator.h"

#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cluster/cluster_spec.h"
#include "core/check.h"

namespace holdfast {
namespace {

MPI_Datatype ToMpi(DataType type) {
  switch (type) {
    case DataType::kFloat32:
      return MPI_FLOAT;
    case DataType::kFloat64:
      return MPI_DOUBLE;
    case DataType::kInt64:
      return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op ToMpi(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_OP_NULL;
}

// A failed CHECK anywhere in the process must take every rank down, not
// leave the others waiting in a collective.
void AbortWorld() { MPI_Abort(MPI_COMM_WORLD, 1); }

// MPI counts are ints; a collective over more elements runs in pieces.
constexpr size_t kMaxMpiCount = size_t{1} << 30;

}  // namespace

struct MpiCommunicator::Impl {
  MPI_Comm comm = MPI_COMM_NULL;
  bool finalize = false;
};

bool MpiCommunicator::LaunchedByMpi() { return ClusterSpec::FromEnvironment().launched_by_mpi(); }

int MpiCommunicator::LocalRankCount() { return ClusterSpec::FromEnvironment().local_size; }

MpiCommunicator::MpiCommunicator() : impl_(std::make_unique<Impl>()) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    // Two threads call MPI, never at once: the training thread and
    // MirroredStrategy's sync thread, which hand the communicator over.
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
    if (provided < MPI_THREAD_SERIALIZED) {
      std::fprintf(stderr, "holdfast: this MPI library lacks MPI_THREAD_SERIALIZED\n");
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    impl_->finalize = true;
  }
  MPI_Comm_dup(MPI_COMM_WORLD, &impl_->comm);
  MPI_Comm_set_errhandler(impl_->comm, MPI_ERRORS_ARE_FATAL);
  MPI_Comm_rank(impl_->comm, &rank_);
  MPI_Comm_size(impl_->comm, &size_);
  SetCheckFailureHandler(&AbortWorld);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  MPI_Comm_free(&impl_->comm);
  if (impl_->finalize) MPI_Finalize();
}

void MpiCommunicator::AllReduce(void* data, size_t count, DataType type, ReduceOp op) {
  // Blocking MPI_Allreduce: Open MPI's tuned algorithms reach about twice the
  // throughput of its non-blocking (libnbc) ones on shared memory. Overlap
  // comes from MirroredStrategy's sync thread instead.
  char* p = static_cast<char*>(data);
  for (size_t done = 0; done < count; done += kMaxMpiCount) {
    const size_t n = std::min(kMaxMpiCount, count - done);
    MPI_Allreduce(MPI_IN_PLACE, p + done * DataTypeSize(type), static_cast<int>(n), ToMpi(type),
                  ToMpi(op), impl_->comm);
  }
}

void MpiCommunicator::Broadcast(void* data, size_t bytes, int root) {
  char* p = static_cast<char*>(data);
  for (size_t done = 0; done < bytes; done += kMaxMpiCount) {
    const size_t n = std::min(kMaxMpiCount, bytes - done);
    MPI_Bcast(p + done, static_cast<int>(n), MPI_BYTE, root, impl_->comm);
  }
}

void MpiCommunicator::AllGather(void* data, std::span<const Part> parts) {
  HOLDFAST_CHECK(parts.size() == static_cast<size_t>(size_), "AllGather needs a part per rank");
  std::vector<int> counts, displacements;
  size_t end = 0;
  for (const Part& p : parts) {
    counts.push_back(static_cast<int>(p.bytes));
    displacements.push_back(static_cast<int>(p.at));
    end = std::max(end, p.at + p.bytes);
  }
  if (end >= kMaxMpiCount) {
    // Displacements are ints too: a larger blob goes one broadcast per rank.
    Communicator::AllGather(data, parts);
    return;
  }
  MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, data, counts.data(), displacements.data(),
                 MPI_BYTE, impl_->comm);
}

std::vector<std::string> MpiCommunicator::Gather(const std::string& bytes, int root) {
  HOLDFAST_CHECK(bytes.size() < kMaxMpiCount, "Gather of " << bytes.size() << " bytes");
  int length = static_cast<int>(bytes.size());
  std::vector<int> lengths(rank_ == root ? size_ : 0);
  MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, root, impl_->comm);
  std::vector<int> offsets(lengths.size());
  int total = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    offsets[i] = total;
    total += lengths[i];
  }
  std::string all(static_cast<size_t>(total), '\0');
  MPI_Gatherv(bytes.data(), length, MPI_BYTE, all.data(), lengths.data(), offsets.data(), MPI_BYTE,
              root, impl_->comm);
  std::vector<std::string> out;
  for (size_t i = 0; i < lengths.size(); ++i) out.push_back(all.substr(offsets[i], lengths[i]));
  return out;
}

void MpiCommunicator::Barrier() { MPI_Barrier(impl_->comm); }

void MpiCommunicator::Abort(int exit_code, const std::string& why) {
  std::fprintf(stderr, "%s\n", why.c_str());
  std::fflush(nullptr);
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

}  // namespace holdfast
