#include "launcher/launch_command.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cluster/cluster_spec.h"
#include "core/exit_codes.h"
#include "launcher/ckpt_command.h"
#include "launcher/hosts.h"
#include "launcher/probe.h"
#include "launcher/process.h"

namespace holdfast::launcher {
namespace {

struct LaunchArgs {
  int np = 0;  // 0: the hostfile's slots; SLURM_NTASKS inside an allocation; else 1
  int max_restarts = 3;
  double restart_delay = 1;
  double grace = 60;
  double kill_after = 10;
  std::string mpirun = "mpirun";
  std::vector<std::string> mpi_args;
  bool no_mpi = false;
  std::string hostfile;  // several hosts: Open MPI hostfile
  // > 0: before each attempt, probe the hosts (of --hostfile or of the SLURM
  // allocation) and run on those that answer.
  int min_np = 0;
  double probe_timeout = 10;
  std::vector<std::string> command;
};

// Open MPI settings for jobs on several hosts (--hostfile, or a SLURM
// allocation of several nodes); each yields to a value given in --mpi-args or
// OMPI_MCA_*.
constexpr std::pair<const char*, const char*> kMultiHostMca[] = {
    // TCP keepalive on the out-of-band channel (mpirun <-> its daemons):
    // without it a host whose link is cut hangs the job silently (100+ s
    // seen); with it mpirun reports the lost daemon and ends the job ~12 s
    // after the cut (5 s idle + 3 probes 2 s apart, measured on namespaces).
    {"oob_tcp_keepalive_time", "5"},
    {"oob_tcp_keepalive_intvl", "2"},
    {"oob_tcp_keepalive_probes", "3"},
    // Daemons stay attached to their launch agent (ssh) instead of
    // daemonizing: a daemon that dies at start-up (e.g. it cannot connect
    // back: seen right after a host's link came back, EHOSTUNREACH from a
    // stale ARP entry) then fails the attempt, which is restarted; a
    // daemonized one dies unseen and mpirun waits for it forever.
    {"orte_leave_session_attached", "1"},
};

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The value of MCA parameter `name` as the job will see it: from --mpi-args
// (`--mca name value`, also -mca and --gmca), else OMPI_MCA_<name>.
std::optional<std::string> MpiParameter(const LaunchArgs& a, const std::string& name) {
  for (size_t i = 0; i + 2 < a.mpi_args.size(); ++i) {
    const std::string& flag = a.mpi_args[i];
    if ((flag == "--mca" || flag == "-mca" || flag == "--gmca" || flag == "-gmca") &&
        a.mpi_args[i + 1] == name) {
      return a.mpi_args[i + 2];
    }
  }
  if (const char* v = std::getenv(("OMPI_MCA_" + name).c_str())) return std::string(v);
  return std::nullopt;
}

// `hostfile` is the file this attempt runs on (the hosts that answered), or
// empty without --hostfile or --min-np. Inside a SLURM allocation mpirun
// places the ranks on its nodes itself (and starts its daemons there with
// srun); a hostfile then narrows the allocation down to the hosts it names.
std::vector<std::string> JobArgv(const LaunchArgs& a, const ClusterSpec& cluster, int np,
                                 const std::string& hostfile) {
  if (a.no_mpi) return a.command;
  std::vector<std::string> argv = {a.mpirun, "-np", std::to_string(np)};
  // On one machine outside a scheduler, more ranks than cores is the user's
  // choice (and how tests run); mpirun refuses it by default.
  if (!cluster.in_slurm() && hostfile.empty() &&
      np > static_cast<int>(std::thread::hardware_concurrency())) {
    argv.push_back("--oversubscribe");
  }
  if (geteuid() == 0) argv.push_back("--allow-run-as-root");
  if (!hostfile.empty()) argv.insert(argv.end(), {"--hostfile", hostfile});
  if (!hostfile.empty() || cluster.allocation_nodes > 1) {
    for (const auto& [name, value] : kMultiHostMca) {
      if (!MpiParameter(a, name)) argv.insert(argv.end(), {"--mca", name, value});
    }
    // The job step of the daemons may share its nodes' CPUs with other steps:
    // the step of an attempt that lost a node cannot end (that node does not
    // answer) and would otherwise hold the CPUs of the nodes the next
    // attempt runs on, so that its step never starts.
    if (cluster.allocation_nodes > 1 && !MpiParameter(a, "plm_slurm_args")) {
      argv.insert(argv.end(), {"--mca", "plm_slurm_args", "--overlap"});
    }
    // Remote ranks get only the environment they are given; rank 0 writes the
    // restore report wherever it runs.
    argv.insert(argv.end(), {"-x", kRestoreReportEnv, "-x", kAttemptEnv});
  }
  argv.insert(argv.end(), a.mpi_args.begin(), a.mpi_args.end());
  argv.insert(argv.end(), a.command.begin(), a.command.end());
  return argv;
}

struct AttemptResult {
  int exit_code = 0;
  std::string cause;       // "done", "preempted (exit 75)", "failed (exit 1)", "killed by signal 9"
  bool signalled = false;  // the launcher got a stop signal during this attempt
};

// Runs one attempt to its end, forwarding stop signals with the grace rule;
// then ends what it left behind but the `inherited` children.
AttemptResult RunAttempt(const LaunchArgs& a, pid_t pid, const std::vector<pid_t>& inherited) {
  const sigset_t handled = HandledSignals();
  AttemptResult result;
  std::optional<Clock::time_point> signalled_at;
  bool term_sent = false, kill_sent = false;
  while (true) {
    int status = 0;
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      if (WIFEXITED(status)) {
        result.exit_code = WEXITSTATUS(status);
        result.cause = result.exit_code == 0                ? "done (exit 0)"
                       : result.exit_code == kExitPreempted ? "preempted (exit 75)"
                       : result.exit_code == kExitUsage
                           ? "usage or bad input (exit 2)"
                           : "failed (exit " + std::to_string(result.exit_code) + ")";
      } else {
        result.exit_code = 128 + WTERMSIG(status);
        result.cause = std::string("killed by signal ") + std::to_string(WTERMSIG(status));
      }
      // Whatever the job left in its group (ranks mpirun did not reap), and
      // outside it.
      kill(-pid, SIGKILL);
      EndLeftovers(inherited);
      result.signalled = signalled_at.has_value();
      return result;
    }
    const timespec tick = {0, 100 * 1000 * 1000};
    const int sig = sigtimedwait(&handled, nullptr, &tick);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGUSR1) {
      if (!signalled_at) {
        signalled_at = Clock::now();
        std::fprintf(stderr,
                     "holdfast launch: got %s: asking the ranks to save and stop (SIGUSR1); "
                     "grace %.0f s\n",
                     sigabbrev_np(sig), a.grace);
        // mpirun forwards USR1 to every rank; a bare program gets it itself.
        kill(pid, SIGUSR1);
      }
    }
    if (signalled_at) {
      const double waited = SecondsSince(*signalled_at);
      if (!term_sent && waited > a.grace) {
        std::fprintf(stderr, "holdfast launch: grace time over: SIGTERM to the job\n");
        kill(-pid, SIGTERM);
        term_sent = true;
      }
      if (!kill_sent && waited > a.grace + a.kill_after) {
        kill(-pid, SIGKILL);
        kill_sent = true;
      }
    }
  }
}

std::string ReadReport(const std::string& path) {
  std::ifstream in(path);
  std::string word, value;
  in >> word >> value;
  if (word == "step") return "resumed from step " + value;
  if (word == "none") return "started fresh";
  return "";
}

int Launch(const LaunchArgs& a) {
  if (a.command.empty()) {
    std::fprintf(stderr,
                 "holdfast launch: no program given (holdfast launch [options] -- "
                 "program args)\n");
    return kExitUsage;
  }
  const ClusterSpec cluster = ClusterSpec::FromEnvironment();
  // --min-np without --hostfile probes the nodes of the SLURM allocation.
  const bool slurm_hosts = a.min_np > 0 && a.hostfile.empty() && cluster.in_slurm();
  if (a.min_np > 0 && a.hostfile.empty() && !slurm_hosts) {
    std::fprintf(stderr,
                 "holdfast launch: --min-np needs --hostfile or a SLURM allocation (the hosts "
                 "to probe)\n");
    return kExitUsage;
  }
  std::vector<HostEntry> hosts;
  if (!a.hostfile.empty() || slurm_hosts) {
    std::string error;
    if (slurm_hosts ? !ReadSlurmHosts(cluster, &hosts, &error)
                    : !ReadHostfile(a.hostfile, &hosts, &error)) {
      std::fprintf(stderr, "holdfast launch: %s\n", error.c_str());
      return kExitUsage;
    }
  }
  const int np = a.np > 0                       ? a.np
                 : !hosts.empty()               ? TotalSlots(hosts)
                 : cluster.allocation_tasks > 0 ? cluster.allocation_tasks
                                                : 1;
  if (a.min_np > np) {
    std::fprintf(stderr, "holdfast launch: --min-np %d is more than the %d ranks asked for\n",
                 a.min_np, np);
    return kExitUsage;
  }

  // Block the handled signals for the launcher's life; they are read
  // synchronously, so none is lost between two attempts.
  const sigset_t handled = HandledSignals();
  sigset_t previous;
  sigprocmask(SIG_BLOCK, &handled, &previous);
  // Descendants whose parent dies come to this launcher, which ends them
  // after each attempt (EndLeftovers), instead of to init.
  const std::vector<pid_t> inherited = Children();
  prctl(PR_SET_CHILD_SUBREAPER, 1);

  char report_template[] = "/tmp/holdfast-launch-XXXXXX";
  const int report_fd = mkstemp(report_template);
  if (report_fd >= 0) close(report_fd);
  const std::string report = report_template;
  // With --min-np, each attempt runs on the hosts that answered, written here.
  std::string answered_hostfile;
  if (a.min_np > 0) {
    char hosts_template[] = "/tmp/holdfast-launch-hosts-XXXXXX";
    const int fd = mkstemp(hosts_template);
    if (fd >= 0) close(fd);
    answered_hostfile = hosts_template;
  }

  const ProbeOptions probe{
      .agent = SplitWords(MpiParameter(a, "plm_rsh_agent").value_or("ssh")),
      .through_slurm = slurm_hosts,
      .timeout_seconds = a.probe_timeout,
  };
  int code = 0;
  for (int attempt = 1;; ++attempt) {
    std::remove(report.c_str());
    std::string error;
    int attempt_np = np;
    std::string attempt_hostfile = a.hostfile;
    if (a.min_np > 0) {
      const std::vector<HostEntry> answered = ProbeHosts(probe, hosts);
      attempt_np = std::min(np, TotalSlots(answered));
      if (attempt_np < a.min_np) {
        std::fprintf(stderr,
                     "holdfast launch: the hosts that answer (%s) have %d slot(s), fewer than "
                     "--min-np %d; giving up\n",
                     answered.empty() ? "none" : HostNames(answered).c_str(), TotalSlots(answered),
                     a.min_np);
        if (attempt == 1) code = kExitFailure;
        break;
      }
      if (!WriteHostfile(answered_hostfile, answered)) {
        std::fprintf(stderr, "holdfast launch: cannot write %s\n", answered_hostfile.c_str());
        code = kExitFailure;
        break;
      }
      attempt_hostfile = answered_hostfile;
      if (answered.size() < hosts.size() || attempt_np < np) {
        std::fprintf(stderr, "holdfast launch: running %d rank(s) on %s (asked for %d)\n",
                     attempt_np, HostNames(answered).c_str(), np);
      }
    }
    const std::vector<std::string> argv = JobArgv(a, cluster, attempt_np, attempt_hostfile);
    const auto start = Clock::now();
    const pid_t pid = Spawn(argv,
                            {std::string(kRestoreReportEnv) + "=" + report,
                             std::string(kAttemptEnv) + "=" + std::to_string(attempt)},
                            &error);
    if (pid < 0) {
      std::fprintf(stderr, "holdfast launch: %s\n", error.c_str());
      code = kExitUsage;
      break;
    }
    const AttemptResult r = RunAttempt(a, pid, inherited);
    code = r.exit_code;
    const std::string resumed = ReadReport(report);
    const bool retry = !r.signalled && code != 0 && code != kExitUsage && attempt <= a.max_restarts;
    const std::string on = a.min_np > 0 ? " on " + std::to_string(attempt_np) + " rank(s)" : "";
    std::fprintf(stderr, "holdfast launch: attempt %d of at most %d: %s after %.1f s%s%s%s%s\n",
                 attempt, a.max_restarts + 1, r.cause.c_str(), SecondsSince(start), on.c_str(),
                 resumed.empty() ? "" : "; ", resumed.c_str(),
                 retry                             ? "; restarting"
                 : r.signalled                     ? "; stopped by a signal, not restarting"
                 : code != 0 && code != kExitUsage ? "; no restarts left"
                                                   : "");
    std::fflush(stderr);
    if (!retry) break;
    // Sleep, still answering signals: a stop signal now ends the launcher.
    const auto wake = Clock::now() + std::chrono::duration<double>(a.restart_delay);
    bool stop = false;
    while (!stop && Clock::now() < wake) {
      const timespec tick = {0, 50 * 1000 * 1000};
      const int sig = sigtimedwait(&handled, nullptr, &tick);
      stop = sig == SIGTERM || sig == SIGINT || sig == SIGUSR1;
    }
    if (stop) break;
  }
  std::remove(report.c_str());
  if (!answered_hostfile.empty()) std::remove(answered_hostfile.c_str());
  sigprocmask(SIG_SETMASK, &previous, nullptr);
  return code;
}

}  // namespace

void AddLaunchCommand(CLI::App& app, int* exit_code) {
  auto args = std::make_shared<LaunchArgs>();
  CLI::App* launch = app.add_subcommand(
      "launch",
      "Run a training program on N ranks under mpirun, restart it after preemption or\n"
      "failure, and give its ranks time to save when this launcher is signalled.\n"
      "SIGTERM/SIGINT/SIGUSR1 here become SIGUSR1 to every rank (save now, exit 75);\n"
      "TERM then KILL follow only after --grace seconds.");
  launch
      ->add_option("-n,--np", args->np,
                   "Ranks (default: the slots of --hostfile; SLURM_NTASKS inside a SLURM "
                   "allocation; else 1)")
      ->check(CLI::PositiveNumber);
  launch->add_option(
      "--hostfile", args->hostfile,
      "Run on several hosts: an Open MPI hostfile (`host slots=N` lines), passed to mpirun\n"
      "with TCP keepalive on its daemon links (oob_tcp_keepalive_time 5, _intvl 2, _probes 3)\n"
      "and daemons attached to their launch agent (orte_leave_session_attached 1), so that a\n"
      "host that dies or drops off the network, or a daemon that dies at start-up, ends the\n"
      "attempt within ~15 s instead of hanging it (--mpi-args or OMPI_MCA_* override these).\n"
      "The launch agent and the interfaces come from the site's Open MPI settings\n"
      "(OMPI_MCA_plm_rsh_agent, ...). Inside a SLURM allocation of several nodes, mpirun\n"
      "runs on its nodes without a hostfile, and gets the same settings");
  launch
      ->add_option("--min-np", args->min_np,
                   "Before each attempt, probe every host (of --hostfile: the launch agent runs\n"
                   "`true` there; else of the SLURM allocation: its nodes and tasks per node, a\n"
                   "job step `srun -N1 -n1 --overlap -w NODE true`) and run min(-np, slots of\n"
                   "the hosts that answered) ranks on those that answered; give up when fewer\n"
                   "than this many would run. A checkpoint resumes on the new world size (same\n"
                   "global batch)")
      ->check(CLI::PositiveNumber);
  launch
      ->add_option("--probe-timeout", args->probe_timeout,
                   "With --min-np: seconds a host gets to answer the probe")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  launch
      ->add_option("--max-restarts", args->max_restarts,
                   "Restarts after exit 75 or a failure before giving up")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  launch->add_option("--restart-delay", args->restart_delay, "Seconds between attempts")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  launch
      ->add_option("--grace", args->grace,
                   "Seconds the ranks get to save after a stop signal before SIGTERM")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  launch->add_option("--kill-after", args->kill_after, "Seconds from that SIGTERM to SIGKILL")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  launch->add_option("--mpirun", args->mpirun, "The mpirun to use")->capture_default_str();
  launch
      ->add_option("--mpi-args", args->mpi_args,
                   "Extra mpirun arguments, split at spaces (\"--mca btl tcp,self\")")
      ->delimiter(' ')
      ->allow_extra_args(false);
  launch->add_flag("--no-mpi", args->no_mpi,
                   "Run the program directly (one process), without mpirun");
  launch->add_option("command", args->command, "-- program [args...]")->required();
  launch->footer(
      "Exit code: the job's final outcome: 0 done, 2 usage or bad input, 75 preempted (when "
      "this launcher was signalled: the scheduler should requeue), else the last failure's "
      "code.");
  launch->callback([args, exit_code] { *exit_code = Launch(*args); });
}

}  // namespace holdfast::launcher
