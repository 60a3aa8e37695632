#include "launcher/hosts.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>

#include "cluster/cluster_spec.h"
#include "launcher/process.h"

namespace holdfast::launcher {

std::vector<std::string> SplitWords(std::string_view s) {
  std::vector<std::string> words;
  std::istringstream in{std::string(s)};
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

bool ParseHostfile(std::string_view text, const std::string& source, std::vector<HostEntry>* hosts,
                   std::string* error) {
  std::istringstream in{std::string(text)};
  int line_number = 0;
  for (std::string line; std::getline(in, line);) {
    ++line_number;
    line = line.substr(0, line.find('#'));
    const std::vector<std::string> words = SplitWords(line);
    if (words.empty()) continue;
    HostEntry entry{.name = words[0]};
    for (size_t i = 1; i < words.size(); ++i) {
      if (words[i].rfind("slots=", 0) == 0) {
        char* end = nullptr;
        const long slots = std::strtol(words[i].c_str() + 6, &end, 10);
        if (end == words[i].c_str() + 6 || *end != '\0' || slots < 1 || slots > 1 << 20) {
          *error = source + ":" + std::to_string(line_number) + ": bad '" + words[i] + "'";
          return false;
        }
        entry.slots = static_cast<int>(slots);
      }
    }
    auto same = std::find_if(hosts->begin(), hosts->end(),
                             [&](const HostEntry& h) { return h.name == entry.name; });
    if (same != hosts->end()) {
      same->slots += entry.slots;
    } else {
      hosts->push_back(entry);
    }
  }
  if (hosts->empty()) {
    *error = "hostfile " + source + " names no host";
    return false;
  }
  return true;
}

bool ReadHostfile(const std::string& path, std::vector<HostEntry>* hosts, std::string* error) {
  std::ifstream in(path);
  if (!in) {
    *error = "cannot read hostfile " + path + ": " + std::strerror(errno);
    return false;
  }
  std::ostringstream text;
  text << in.rdbuf();
  return ParseHostfile(text.str(), path, hosts, error);
}

bool WriteHostfile(const std::string& path, const std::vector<HostEntry>& hosts) {
  std::ofstream out(path, std::ios::trunc);
  for (const HostEntry& h : hosts) out << h.name << " slots=" << h.slots << "\n";
  out.close();
  return static_cast<bool>(out);
}

bool SlurmHosts(std::string_view node_names, std::string_view tasks_per_node,
                std::vector<HostEntry>* hosts, std::string* error) {
  const std::vector<int> tasks = SlurmTasksPerNode(tasks_per_node);
  for (const std::string& name : SplitWords(node_names)) {
    const size_t i = hosts->size();
    hosts->push_back({.name = name, .slots = i < tasks.size() ? tasks[i] : 1});
  }
  if (hosts->empty()) {
    *error = "the allocation has no nodes";
    return false;
  }
  return true;
}

bool ReadSlurmHosts(const ClusterSpec& cluster, std::vector<HostEntry>* hosts, std::string* error) {
  if (cluster.nodes.empty()) {
    *error = "SLURM_JOB_NODELIST is not set";
    return false;
  }
  const std::optional<std::string> names =
      OutputOf({"scontrol", "show", "hostnames", cluster.nodes});
  if (!names) {
    *error = "`scontrol show hostnames " + cluster.nodes + "` failed";
    return false;
  }
  if (!SlurmHosts(*names, cluster.tasks_per_node, hosts, error)) {
    *error = "no nodes in SLURM_JOB_NODELIST=" + cluster.nodes;
    return false;
  }
  return true;
}

int TotalSlots(const std::vector<HostEntry>& hosts) {
  int total = 0;
  for (const HostEntry& h : hosts) total += h.slots;
  return total;
}

std::string HostNames(const std::vector<HostEntry>& hosts) {
  std::string names;
  for (const HostEntry& h : hosts) names += (names.empty() ? "" : " ") + h.name;
  return names;
}

}  // namespace holdfast::launcher
