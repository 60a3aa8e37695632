#include "cluster/cluster_spec.h"

#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <string>

extern char** environ;

namespace holdfast {
namespace {

class Variables {
 public:
  explicit Variables(const std::map<std::string, std::string>& env) : env_(env) {}
  const std::string* Find(const char* name) const {
    const auto it = env_.find(name);
    return it == env_.end() ? nullptr : &it->second;
  }
  // The first of `names` that is set to an integer of at least `min`.
  bool Int(std::initializer_list<const char*> names, int* out, long min = 0) const {
    for (const char* name : names) {
      const std::string* v = Find(name);
      if (v == nullptr || v->empty()) continue;
      char* end = nullptr;
      const long n = std::strtol(v->c_str(), &end, 10);
      if (*end == '\0' && n >= min) {
        *out = static_cast<int>(n);
        return true;
      }
    }
    return false;
  }
  std::string String(const char* name) const {
    const std::string* v = Find(name);
    return v == nullptr ? "" : *v;
  }

 private:
  const std::map<std::string, std::string>& env_;
};

}  // namespace

ClusterSpec ClusterSpec::FromEnvironment() {
  std::map<std::string, std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry = *e;
    const size_t eq = entry.find('=');
    if (eq != std::string::npos) env[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  ClusterSpec spec = FromVariables(env);
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) spec.host = host;
  return spec;
}

ClusterSpec ClusterSpec::FromVariables(const std::map<std::string, std::string>& env) {
  const Variables v(env);
  ClusterSpec s;
  const bool slurm = !v.String("SLURM_JOB_ID").empty();
  if (v.Find("OMPI_COMM_WORLD_SIZE") != nullptr) {
    s.launcher = "openmpi";
    v.Int({"OMPI_COMM_WORLD_RANK"}, &s.rank);
    v.Int({"OMPI_COMM_WORLD_SIZE"}, &s.size);
    v.Int({"OMPI_COMM_WORLD_LOCAL_RANK"}, &s.local_rank);
    v.Int({"OMPI_COMM_WORLD_LOCAL_SIZE"}, &s.local_size);
  } else if (v.Find("PMIX_RANK") != nullptr || v.Find("PMI_RANK") != nullptr) {
    s.launcher = "pmix";
    v.Int({"PMIX_RANK", "PMI_RANK"}, &s.rank);
    v.Int({"PMI_SIZE", "SLURM_NTASKS", "SLURM_NPROCS"}, &s.size);
    v.Int({"MPI_LOCALRANKID", "SLURM_LOCALID"}, &s.local_rank);
    v.Int({"MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"}, &s.local_size);
  } else if (slurm && v.Find("SLURM_PROCID") != nullptr) {
    // A task of srun without an MPI plugin, or the batch script itself.
    s.launcher = "slurm";
    v.Int({"SLURM_PROCID"}, &s.rank);
    v.Int({"SLURM_NTASKS", "SLURM_NPROCS"}, &s.size);
    v.Int({"SLURM_LOCALID"}, &s.local_rank);
    v.Int({"SLURM_NTASKS_PER_NODE"}, &s.local_size);
  }
  if (slurm) {
    s.job_id = v.String("SLURM_JOB_ID");
    v.Int({"SLURM_RESTART_COUNT"}, &s.restart_count);
    s.nodes = v.String("SLURM_JOB_NODELIST");
    if (s.nodes.empty()) s.nodes = v.String("SLURM_NODELIST");
    s.allocation_nodes = 1;
    v.Int({"SLURM_JOB_NUM_NODES", "SLURM_NNODES"}, &s.allocation_nodes, /*min=*/1);
    v.Int({"SLURM_NTASKS", "SLURM_NPROCS"}, &s.allocation_tasks, /*min=*/1);
    s.tasks_per_node = v.String("SLURM_TASKS_PER_NODE");
  }
  v.Int({"HOLDFAST_ATTEMPT"}, &s.attempt);
  if (s.size < 1) s.size = 1;
  if (s.local_size < 1) s.local_size = 1;
  return s;
}

std::string ClusterSpec::Describe() const {
  std::string d = "rank " + std::to_string(rank) + " of " + std::to_string(size) + " (local " +
                  std::to_string(local_rank) + " of " + std::to_string(local_size) + ") on " +
                  (host.empty() ? "?" : host) + ", " + launcher;
  if (!job_id.empty()) {
    d += ", SLURM job " + job_id + " restart " + std::to_string(restart_count);
    if (!nodes.empty()) d += " on " + nodes;
  }
  if (attempt > 1) d += ", attempt " + std::to_string(attempt);
  return d;
}

std::vector<int> SlurmTasksPerNode(std::string_view value) {
  // A positive integer at the front of `text`, consumed; 0 when there is none.
  auto take_count = [](std::string_view& text) {
    int n = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (error != std::errc() || n < 1) return 0;
    text.remove_prefix(static_cast<size_t>(end - text.data()));
    return n;
  };
  constexpr int kMaxNodes = 1 << 20;  // more than any allocation: a bound on what a typo costs
  std::vector<int> tasks;
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view item = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view() : value.substr(comma + 1);
    const int count = take_count(item);
    int repeat = 1;
    if (item.starts_with("(x")) {
      item.remove_prefix(2);
      repeat = take_count(item);
      if (item != ")") repeat = 0;
    } else if (!item.empty()) {
      repeat = 0;
    }
    if (count == 0 || repeat == 0 || repeat > kMaxNodes - static_cast<int>(tasks.size())) break;
    tasks.insert(tasks.end(), static_cast<size_t>(repeat), count);
  }
  return tasks;
}

}  // namespace holdfast
