// Which hosts answer, without root, hosts or SLURM: the probe commands, and
// real probes through a launch agent that is a local script (the fault: a
// host that refuses, one that never answers).
#include "launcher/probe.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <string>

#include "tests/testutil/testutil.h"

namespace holdfast::launcher {
namespace {

TEST(ProbeArgvTest, SshGetsBatchModeAndTheTimeoutOtherAgentsRunAsGiven) {
  EXPECT_EQ(ProbeArgv({.agent = {"ssh"}, .timeout_seconds = 4}, "n1"),
            (std::vector<std::string>{"ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=4", "n1",
                                      "true"}));
  EXPECT_EQ(ProbeArgv({.agent = {"/usr/bin/ssh", "-p", "2222"}, .timeout_seconds = 0.2}, "n1"),
            (std::vector<std::string>{"/usr/bin/ssh", "-p", "2222", "-o", "BatchMode=yes", "-o",
                                      "ConnectTimeout=1", "n1", "true"}));
  EXPECT_EQ(ProbeArgv({.agent = {"ip", "netns", "exec"}}, "h2"),
            (std::vector<std::string>{"ip", "netns", "exec", "h2", "true"}));
  EXPECT_EQ(ProbeArgv({.agent = {}}, "n1").front(), "ssh");
}

TEST(ProbeArgvTest, InsideSlurmAOneTaskStepOnTheNode) {
  EXPECT_EQ(ProbeArgv({.through_slurm = true}, "node7"),
            (std::vector<std::string>{"srun", "--nodes=1", "--ntasks=1", "--overlap", "--quiet",
                                      "--nodelist=node7", "true"}));
}

// A launch agent that runs `true` "on" hosts named up*, fails for down*, and
// never returns for hung* (its pid written to DIR/hung-<host>.pid).
std::string WriteAgent(const std::string& dir) {
  const std::string path = dir + "/agent.sh";
  std::ofstream(path) << "#!/bin/sh\n"
                         "case \"$1\" in\n"
                         "  up*) exec \"$2\" ;;\n"
                         "  down*) exit 255 ;;\n"
                         "  hung*) echo $$ > \"" +
                             dir +
                             "/hung-$1.pid\"; exec sleep 60 ;;\n"
                             "esac\n"
                             "exit 1\n";
  chmod(path.c_str(), 0755);
  return path;
}

TEST(ProbeHostsTest, TheHostsThatAnswerInTheirOrderTheOthersNamedWithWhy) {
  TempDir dir;
  const std::string agent = WriteAgent(dir.path());
  const std::vector<HostEntry> hosts = {
      {"up1", 2}, {"down1", 1}, {"hung1", 4}, {"up2", 1}, {"down2", 3}};
  testing::internal::CaptureStderr();
  const auto t0 = std::chrono::steady_clock::now();
  const std::vector<HostEntry> answered =
      ProbeHosts({.agent = {agent}, .timeout_seconds = 1.0}, hosts);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string err = testing::internal::GetCapturedStderr();

  EXPECT_EQ(answered, (std::vector<HostEntry>{{"up1", 2}, {"up2", 1}}));
  EXPECT_NE(err.find("host down1 does not answer (probe exit 255)"), std::string::npos) << err;
  EXPECT_NE(err.find("host down2 does not answer (probe exit 255)"), std::string::npos) << err;
  EXPECT_NE(err.find("host hung1 does not answer (no answer within 1 s)"), std::string::npos)
      << err;
  EXPECT_EQ(err.find("up1"), std::string::npos) << err;
  // All at once: the hung host costs the timeout once, not per host.
  EXPECT_GE(seconds, 1.0);
  EXPECT_LT(seconds, 10.0);
  // The hung probe was killed, not left running.
  std::ifstream pid_file(dir.path() + "/hung-hung1.pid");
  pid_t pid = 0;
  ASSERT_TRUE(pid_file >> pid);
  EXPECT_NE(kill(pid, 0), 0);
}

TEST(ProbeHostsTest, AnAgentThatCannotStartAnswersForNoHost) {
  testing::internal::CaptureStderr();
  const std::vector<HostEntry> answered =
      ProbeHosts({.agent = {"/nonexistent/agent"}, .timeout_seconds = 2}, {{"up1", 1}});
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(answered.empty());
  EXPECT_NE(err.find("host up1 does not answer"), std::string::npos) << err;
}

}  // namespace
}  // namespace holdfast::launcher
