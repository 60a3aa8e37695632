// Host discovery for `holdfast launch`, without root, hosts or SLURM: the
// hostfile and SLURM node-list parsers and the hostfile writer.
#include "launcher/hosts.h"

#include <gtest/gtest.h>

#include "tests/testutil/testutil.h"

namespace holdfast::launcher {
namespace {

TEST(HostfileTest, SlotsCommentsAndRepeatedHosts) {
  std::vector<HostEntry> hosts;
  std::string error;
  ASSERT_TRUE(
      ParseHostfile("# the cluster\n"
                    "node1 slots=4\n"
                    "\n"
                    "node2   # one slot by default\n"
                    "node1 slots=2 max_slots=8\n",
                    "hf", &hosts, &error))
      << error;
  EXPECT_EQ(hosts, (std::vector<HostEntry>{{"node1", 6}, {"node2", 1}}));
  EXPECT_EQ(TotalSlots(hosts), 7);
  EXPECT_EQ(HostNames(hosts), "node1 node2");
}

TEST(HostfileTest, BadSlotsNameTheLineAndAnEmptyFileIsAnError) {
  for (const char* bad : {"slots=0", "slots=x", "slots=", "slots=-2", "slots=3x"}) {
    std::vector<HostEntry> hosts;
    std::string error;
    EXPECT_FALSE(ParseHostfile(std::string("a\nb ") + bad + "\n", "hf", &hosts, &error)) << bad;
    EXPECT_EQ(error, std::string("hf:2: bad '") + bad + "'");
  }
  std::vector<HostEntry> hosts;
  std::string error;
  EXPECT_FALSE(ParseHostfile("# nothing\n\n", "hf", &hosts, &error));
  EXPECT_EQ(error, "hostfile hf names no host");
}

TEST(HostfileTest, WrittenHostfilesReadBack) {
  TempDir dir;
  const std::vector<HostEntry> hosts = {{"a", 2}, {"b", 1}, {"c", 16}};
  const std::string path = dir.File("hosts");
  ASSERT_TRUE(WriteHostfile(path, hosts));
  std::vector<HostEntry> back;
  std::string error;
  ASSERT_TRUE(ReadHostfile(path, &back, &error)) << error;
  EXPECT_EQ(back, hosts);
  back.clear();
  EXPECT_FALSE(ReadHostfile(dir.File("missing"), &back, &error));
  EXPECT_NE(error.find("cannot read hostfile"), std::string::npos) << error;
}

// SLURM_TASKS_PER_NODE gives each node its slots in order; nodes past its
// end (or without it) get one.
TEST(SlurmHostsTest, TasksPerNodeGiveTheSlots) {
  std::vector<HostEntry> hosts;
  std::string error;
  ASSERT_TRUE(SlurmHosts("n1\nn2\nn3\nn4\n", "2(x3),1", &hosts, &error)) << error;
  EXPECT_EQ(hosts, (std::vector<HostEntry>{{"n1", 2}, {"n2", 2}, {"n3", 2}, {"n4", 1}}));
  hosts.clear();
  ASSERT_TRUE(SlurmHosts("n1 n2", "", &hosts, &error));
  EXPECT_EQ(hosts, (std::vector<HostEntry>{{"n1", 1}, {"n2", 1}}));
  hosts.clear();
  EXPECT_FALSE(SlurmHosts("\n", "1", &hosts, &error));
}

}  // namespace
}  // namespace holdfast::launcher
