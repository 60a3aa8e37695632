// ClusterSpec from the environments that OpenMPI, PMIx (srun --mpi=pmix),
// SLURM and holdfast launch leave, alone and combined.
#include "cluster/cluster_spec.h"

#include <gtest/gtest.h>

#include <vector>

namespace holdfast {
namespace {

TEST(ClusterSpecTest, NothingSetIsOneProcess) {
  const ClusterSpec s = ClusterSpec::FromVariables({});
  EXPECT_EQ(s.launcher, "single");
  EXPECT_EQ(s.rank, 0);
  EXPECT_EQ(s.size, 1);
  EXPECT_FALSE(s.launched_by_mpi());
  EXPECT_EQ(s.attempt, 1);
}

TEST(ClusterSpecTest, OpenMpiInsideSlurmTakesRanksFromMpiAndTheJobFromSlurm) {
  const ClusterSpec s = ClusterSpec::FromVariables({
      {"OMPI_COMM_WORLD_RANK", "3"},
      {"OMPI_COMM_WORLD_SIZE", "4"},
      {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
      {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"},
      {"SLURM_JOB_ID", "117"},
      {"SLURM_PROCID", "0"},  // the batch step's, not this rank's
      {"SLURM_NTASKS", "4"},
      {"SLURM_RESTART_COUNT", "2"},
      {"SLURM_JOB_NODELIST", "node[1-2]"},
      {"HOLDFAST_ATTEMPT", "3"},
  });
  EXPECT_EQ(s.launcher, "openmpi");
  EXPECT_TRUE(s.launched_by_mpi());
  EXPECT_EQ(s.rank, 3);
  EXPECT_EQ(s.size, 4);
  EXPECT_EQ(s.local_rank, 1);
  EXPECT_EQ(s.local_size, 2);
  EXPECT_EQ(s.job_id, "117");
  EXPECT_EQ(s.restart_count, 2);
  EXPECT_EQ(s.nodes, "node[1-2]");
  EXPECT_EQ(s.attempt, 3);
  EXPECT_EQ(s.Describe(),
            "rank 3 of 4 (local 1 of 2) on ?, openmpi, SLURM job 117 restart 2 on node[1-2], "
            "attempt 3");
}

TEST(ClusterSpecTest, SrunWithPmix) {
  const ClusterSpec s = ClusterSpec::FromVariables({{"PMIX_RANK", "5"},
                                                    {"SLURM_JOB_ID", "9"},
                                                    {"SLURM_PROCID", "5"},
                                                    {"SLURM_NTASKS", "6"},
                                                    {"SLURM_LOCALID", "2"},
                                                    {"SLURM_NTASKS_PER_NODE", "3"}});
  EXPECT_EQ(s.launcher, "pmix");
  EXPECT_EQ(s.rank, 5);
  EXPECT_EQ(s.size, 6);
  EXPECT_EQ(s.local_rank, 2);
  EXPECT_EQ(s.local_size, 3);
  EXPECT_EQ(s.restart_count, 0);
}

TEST(ClusterSpecTest, PlainSlurmTask) {
  const ClusterSpec s = ClusterSpec::FromVariables(
      {{"SLURM_JOB_ID", "9"}, {"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}});
  EXPECT_EQ(s.launcher, "slurm");
  EXPECT_FALSE(s.launched_by_mpi());
  EXPECT_EQ(s.rank, 1);
  EXPECT_EQ(s.size, 2);
}

TEST(ClusterSpecTest, TheAllocationIsReadWhoeverLaunched) {
  // A batch script under `holdfast launch`: no rank variables, only the
  // allocation's, which size the job.
  const ClusterSpec s = ClusterSpec::FromVariables({{"SLURM_JOB_ID", "9"},
                                                    {"SLURM_JOB_NODELIST", "n[1-3]"},
                                                    {"SLURM_NNODES", "3"},
                                                    {"SLURM_NPROCS", "5"},
                                                    {"SLURM_TASKS_PER_NODE", "2(x2),1"}});
  EXPECT_TRUE(s.in_slurm());
  EXPECT_EQ(s.allocation_nodes, 3);
  EXPECT_EQ(s.allocation_tasks, 5);
  EXPECT_EQ(s.tasks_per_node, "2(x2),1");
  EXPECT_EQ(s.nodes, "n[1-3]");
  EXPECT_EQ(s.size, 1);  // this process is not one of the tasks

  // SLURM_JOB_NUM_NODES wins over the older SLURM_NNODES; a job with no node
  // count has one node; a zero task count is none.
  const ClusterSpec t = ClusterSpec::FromVariables({{"SLURM_JOB_ID", "9"},
                                                    {"SLURM_JOB_NUM_NODES", "2"},
                                                    {"SLURM_NNODES", "4"},
                                                    {"SLURM_NTASKS", "0"}});
  EXPECT_EQ(t.allocation_nodes, 2);
  EXPECT_EQ(t.allocation_tasks, 0);
  EXPECT_EQ(ClusterSpec::FromVariables({{"SLURM_JOB_ID", "9"}}).allocation_nodes, 1);

  const ClusterSpec outside = ClusterSpec::FromVariables({{"SLURM_NTASKS", "4"}});
  EXPECT_FALSE(outside.in_slurm());
  EXPECT_EQ(outside.allocation_nodes, 0);
  EXPECT_EQ(outside.allocation_tasks, 0);
}

TEST(ClusterSpecTest, MalformedNumbersAreIgnored) {
  const ClusterSpec s = ClusterSpec::FromVariables(
      {{"OMPI_COMM_WORLD_SIZE", "two"}, {"OMPI_COMM_WORLD_RANK", "-1"}, {"HOLDFAST_ATTEMPT", "x"}});
  EXPECT_EQ(s.launcher, "openmpi");
  EXPECT_EQ(s.size, 1);
  EXPECT_EQ(s.rank, 0);
  EXPECT_EQ(s.attempt, 1);
}

// SLURM's compressed tasks-per-node list, as `holdfast launch` reads it
// to give each node of the allocation its slots.
TEST(SlurmTasksPerNodeTest, ExpandsRepeatsInNodeOrder) {
  EXPECT_EQ(SlurmTasksPerNode("2(x3),1"), (std::vector<int>{2, 2, 2, 1}));
  EXPECT_EQ(SlurmTasksPerNode("4"), (std::vector<int>{4}));
  EXPECT_EQ(SlurmTasksPerNode("1,16(x2),3"), (std::vector<int>{1, 16, 16, 3}));
  EXPECT_EQ(SlurmTasksPerNode(""), (std::vector<int>{}));
}

TEST(SlurmTasksPerNodeTest, StopsAtTheFirstItemItCannotRead) {
  EXPECT_EQ(SlurmTasksPerNode("2,x,3"), (std::vector<int>{2}));
  EXPECT_EQ(SlurmTasksPerNode("2(x3"), (std::vector<int>{}));
  EXPECT_EQ(SlurmTasksPerNode("1,2(x3)junk"), (std::vector<int>{1}));
  EXPECT_EQ(SlurmTasksPerNode("0,1"), (std::vector<int>{}));
  EXPECT_EQ(SlurmTasksPerNode("2(x0),1"), (std::vector<int>{}));
  EXPECT_EQ(SlurmTasksPerNode("-1"), (std::vector<int>{}));
  EXPECT_EQ(SlurmTasksPerNode("1(x99999999999)"), (std::vector<int>{}));
  EXPECT_EQ(SlurmTasksPerNode("1(x2000000)"), (std::vector<int>{}));
}

}  // namespace
}  // namespace holdfast
