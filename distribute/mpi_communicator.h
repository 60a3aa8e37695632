// MpiCommunicator: collectives over a duplicate of MPI_COMM_WORLD.
#pragma once

#include <memory>
#include <string>

#include "distribute/communicator.h"

namespace holdfast {

class MpiCommunicator final : public Communicator {
 public:
  // Initialises MPI if the program has not (and then finalises it in the
  // destructor), and duplicates MPI_COMM_WORLD so holdfast's collectives never
  // mix with the program's own. Errors on the communicator abort the job.
  MpiCommunicator();
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string kind() const override { return "mpi"; }
  void AllReduce(void* data, size_t count, DataType type, ReduceOp op) override;
  void Broadcast(void* data, size_t bytes, int root) override;
  void AllGather(void* data, std::span<const Part> parts) override;
  std::vector<std::string> Gather(const std::string& bytes, int root) override;
  void Barrier() override;
  [[noreturn]] void Abort(int exit_code, const std::string& why) override;

  // True when this process was started by an MPI launcher (mpirun, srun
  // with PMIx), judged from the environment without initialising MPI.
  static bool LaunchedByMpi();
  // Ranks of this job on this host, from the launcher's environment (1 when
  // not launched by MPI); used to share the cores between them.
  static int LocalRankCount();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, size_ = 1;
};

}  // namespace holdfast
