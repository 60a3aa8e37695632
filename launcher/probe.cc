#include "launcher/probe.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "launcher/process.h"

namespace holdfast::launcher {

std::vector<std::string> ProbeArgv(const ProbeOptions& options, const std::string& host) {
  if (options.through_slurm) {
    return {"srun",    "--nodes=1",          "--ntasks=1", "--overlap",
            "--quiet", "--nodelist=" + host, "true"};
  }
  std::vector<std::string> argv = options.agent;
  if (argv.empty()) argv = {"ssh"};
  if (argv[0] == "ssh" || argv[0].ends_with("/ssh")) {
    const int seconds = std::max(1, static_cast<int>(options.timeout_seconds));
    argv.insert(argv.end(),
                {"-o", "BatchMode=yes", "-o", "ConnectTimeout=" + std::to_string(seconds)});
  }
  argv.insert(argv.end(), {host, "true"});
  return argv;
}

std::vector<HostEntry> ProbeHosts(const ProbeOptions& options,
                                  const std::vector<HostEntry>& hosts) {
  using Clock = std::chrono::steady_clock;
  std::vector<pid_t> pids(hosts.size(), -1);
  std::vector<std::string> why(hosts.size());
  for (size_t i = 0; i < hosts.size(); ++i) {
    pids[i] = Spawn(ProbeArgv(options, hosts[i].name), {}, &why[i], /*quiet=*/true);
  }
  const auto deadline = Clock::now() + std::chrono::duration<double>(options.timeout_seconds);
  size_t running = 0;
  do {
    running = 0;
    for (size_t i = 0; i < hosts.size(); ++i) {
      if (pids[i] < 0) continue;
      int status = 0;
      if (waitpid(pids[i], &status, WNOHANG) == pids[i]) {
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
          why[i] = WIFEXITED(status) ? "probe exit " + std::to_string(WEXITSTATUS(status))
                                     : "probe killed by signal " + std::to_string(WTERMSIG(status));
        }
        pids[i] = -1;
      } else {
        ++running;
      }
    }
    if (running > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (running > 0 && Clock::now() < deadline);
  std::vector<HostEntry> answered;
  for (size_t i = 0; i < hosts.size(); ++i) {
    if (pids[i] >= 0) {
      kill(-pids[i], SIGKILL);
      waitpid(pids[i], nullptr, 0);
      why[i] =
          "no answer within " + std::to_string(static_cast<int>(options.timeout_seconds)) + " s";
    }
    if (why[i].empty()) {
      answered.push_back(hosts[i]);
    } else {
      std::fprintf(stderr, "holdfast launch: host %s does not answer (%s)\n", hosts[i].name.c_str(),
                   why[i].c_str());
    }
  }
  return answered;
}

}  // namespace holdfast::launcher
