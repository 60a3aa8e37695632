// Which hosts answer: before each attempt of `holdfast launch --min-np`, every
// host is asked at once to run `true` the way mpirun will reach it (its
// launch agent, or a SLURM job step), and the attempt runs on those that did.
#pragma once

#include <string>
#include <vector>

#include "launcher/hosts.h"

namespace holdfast::launcher {

struct ProbeOptions {
  // The launch agent's command (mpirun's plm_rsh_agent, split into words):
  // `agent... host true`. ssh gets BatchMode and a ConnectTimeout.
  std::vector<std::string> agent = {"ssh"};
  // Inside a SLURM allocation: a one-task job step on the node instead (as
  // mpirun starts its daemons there), `srun --nodelist=host true`.
  bool through_slurm = false;
  // A host that has not answered by then does not answer.
  double timeout_seconds = 10;
};

// The command that asks `host` to run `true`.
std::vector<std::string> ProbeArgv(const ProbeOptions& options, const std::string& host);

// Asks every host at once (ProbeArgv); returns the hosts that exited 0
// within the timeout, in their order, and reports each other one on stderr
// with why ("probe exit 255", "no answer within 10 s"). A probe still
// running at the timeout is killed with its process group.
std::vector<HostEntry> ProbeHosts(const ProbeOptions& options, const std::vector<HostEntry>& hosts);

}  // namespace holdfast::launcher
