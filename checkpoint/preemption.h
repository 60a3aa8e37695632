// PreemptionHandler: turns the signal a cluster sends before it takes the
// machines back (SLURM: the --signal of sbatch, then TERM; Kubernetes and
// most schedulers: TERM) into a flag the training loop polls.
//
// The signal handler only stores into a lock-free atomic. The loop raises
// Replica::RequestStop() when it sees the flag, that request rides in the
// control words of the next gradient all-reduce, and so every rank learns at
// the same step s that some rank (or several) was signalled: all commit
// checkpoint s and exit with kExitPreempted. BackupAndRestore does this for
// Fit (save_before_preemption); custom loops call
// CheckpointManager::SaveIfPreempted after each step.
//
// One handler per process: a program holds one for its whole life (so that
// a signal during start-up or shutdown is caught, not fatal) and lends it to
// its BackupAndRestore or CheckpointManager
// (CheckpointOptions::preemption_handler); given none, they install their
// own. Handlers still nest where a process holds several (in-process ranks
// in tests, each with its own manager): they share one flag, and the last
// one destroyed puts the previous dispositions back. A signal arriving while
// a checkpoint is being written, or during evaluation, stays in the flag; a
// second signal changes nothing.
#pragma once

#include <csignal>
#include <vector>

#include "core/exit_codes.h"

namespace holdfast {

// kExitPreempted (core/exit_codes.h): the exit code of a job that stopped
// for preemption after committing a checkpoint.

struct PreemptionOptions {
  // SIGUSR1 is what a SLURM batch script forwards (see cluster/slurm); TERM
  // is what most schedulers and `kill` send. Add SIGINT to treat Ctrl-C as a
  // preemption too.
  std::vector<int> signals = {SIGTERM, SIGUSR1};
};

class PreemptionHandler {
 public:
  explicit PreemptionHandler(PreemptionOptions options = {});
  ~PreemptionHandler();
  PreemptionHandler(const PreemptionHandler&) = delete;
  PreemptionHandler& operator=(const PreemptionHandler&) = delete;

  // Whether one of the signals arrived since installation (or Clear()).
  bool requested() const;
  // The first such signal's number, 0 if none.
  int signal_number() const;
  void Clear();

  // Raises the flag as if `signal` had arrived (tests, and programs that
  // decide to stop for their own reasons).
  static void Raise(int signal);

  // The PreemptionHandlers alive in this process (1 in a program that lends
  // its handler; for tests).
  static int live_handlers();

 private:
  std::vector<int> signals_;
};

}  // namespace holdfast
