// ClusterSpec: where this process stands in its job, read from the
// environment its launcher left: Open MPI's mpirun (OMPI_COMM_WORLD_*),
// a PMIx launcher (PMIX_RANK; srun --mpi=pmix), SLURM (SLURM_PROCID,
// SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_ID, SLURM_RESTART_COUNT, the
// allocation's nodes and tasks), `holdfast launch` (HOLDFAST_ATTEMPT), or
// nothing: one process. The one reader of these variables: the launcher
// sizes its jobs from the same ClusterSpec.
//
// When several are present (mpirun inside a SLURM allocation), the MPI
// launcher's rank and size win (those are the ranks that train) and the job
// id, restart count and node list come from SLURM.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace holdfast {

struct ClusterSpec {
  std::string launcher = "single";  // "openmpi", "pmix", "slurm" or "single"
  int rank = 0, size = 1;
  int local_rank = 0, local_size = 1;  // on this host
  std::string host;                    // this host's name
  std::string job_id;                  // SLURM job id, empty outside SLURM
  int restart_count = 0;               // SLURM requeues of this job
  int attempt = 1;                     // holdfast launch's attempt number
  std::string nodes;                   // SLURM_JOB_NODELIST, empty outside SLURM
  // The SLURM allocation, as `holdfast launch` sizes a job from it: 0 and
  // empty outside SLURM.
  int allocation_nodes = 0;    // SLURM_JOB_NUM_NODES (SLURM_NNODES); 1 if unset
  int allocation_tasks = 0;    // SLURM_NTASKS (SLURM_NPROCS); 0 if unset
  std::string tasks_per_node;  // SLURM_TASKS_PER_NODE, e.g. "2(x3),1"

  // From this process's environment.
  static ClusterSpec FromEnvironment();
  // From `env` (name -> value), for tests.
  static ClusterSpec FromVariables(const std::map<std::string, std::string>& env);

  bool launched_by_mpi() const { return launcher == "openmpi" || launcher == "pmix"; }
  bool in_slurm() const { return !job_id.empty(); }  // inside a SLURM allocation
  // One line for the log: "rank 0 of 4 (local 0 of 2) on node1, openmpi,
  // SLURM job 123 restart 1 on node[1-2], attempt 2".
  std::string Describe() const;
};

// SLURM_TASKS_PER_NODE ("2(x3),1": two tasks on each of three nodes, then
// one) as a count per node, in node order: {2, 2, 2, 1}. Reading stops at
// the first item not of the form N or N(xM) with N, M >= 1.
std::vector<int> SlurmTasksPerNode(std::string_view value);

}  // namespace holdfast
