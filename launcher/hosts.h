// The hosts a `holdfast launch` attempt may run on: Open MPI hostfiles and
// the nodes of a SLURM allocation, as lists of (name, slots). The parsers
// are pure, so that they are tested without root, hosts or SLURM.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "cluster/cluster_spec.h"

namespace holdfast::launcher {

// One line of a hostfile: `name [slots=N] [...]`.
struct HostEntry {
  std::string name;
  int slots = 1;
  bool operator==(const HostEntry&) const = default;
};

// An Open MPI hostfile's text: one host a line, `slots=N` (default 1), `#`
// comments, other words ignored; a host named twice has the sum of its
// slots. `source` names the file in errors ("F:3: bad 'slots=x'").
bool ParseHostfile(std::string_view text, const std::string& source, std::vector<HostEntry>* hosts,
                   std::string* error);
// ParseHostfile of the file at `path`.
bool ReadHostfile(const std::string& path, std::vector<HostEntry>* hosts, std::string* error);
// Writes `hosts` as a hostfile at `path`.
bool WriteHostfile(const std::string& path, const std::vector<HostEntry>& hosts);

// A SLURM allocation's nodes: `node_names` as `scontrol show hostnames`
// prints them, each with its tasks from SLURM_TASKS_PER_NODE ("2(x3),1";
// 1 each when empty or short).
bool SlurmHosts(std::string_view node_names, std::string_view tasks_per_node,
                std::vector<HostEntry>* hosts, std::string* error);
// SlurmHosts of the allocation `cluster` runs in (its node list through
// `scontrol show hostnames`).
bool ReadSlurmHosts(const ClusterSpec& cluster, std::vector<HostEntry>* hosts, std::string* error);

int TotalSlots(const std::vector<HostEntry>& hosts);
// "a b c".
std::string HostNames(const std::vector<HostEntry>& hosts);
std::vector<std::string> SplitWords(std::string_view s);

}  // namespace holdfast::launcher
