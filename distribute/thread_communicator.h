// In-process ranks: N threads of one process, each with a Communicator, for
// fast unit tests of the protocols built on collectives (no MPI needed).
// Reductions combine ranks in rank order, so every rank gets bit-identical
// results, as with MPI.
#pragma once

#include <functional>
#include <memory>
#include <stdexcept>
#include <string>

#include "distribute/communicator.h"

namespace holdfast {

// Thrown on every rank of a group when one rank calls Abort(): the test
// sees the abort as an exception instead of a dead process.
class CommunicatorAborted : public std::runtime_error {
 public:
  CommunicatorAborted(int exit_code, const std::string& why)
      : std::runtime_error(why), exit_code_(exit_code) {}
  int exit_code() const { return exit_code_; }

 private:
  int exit_code_;
};

// Runs fn(comm) on `world_size` threads, one Communicator per rank, and
// joins them. An exception thrown by any rank's fn is rethrown here after
// all threads have finished (others are released with CommunicatorAborted).
void RunInProcessRanks(int world_size, const std::function<void(Communicator&)>& fn);

}  // namespace holdfast
