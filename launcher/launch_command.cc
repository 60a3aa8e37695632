#include "launcher/launch_command.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint/manager.h"
#include "checkpoint/preemption.h"
#include "launcher/ckpt_command.h"

extern char** environ;

namespace holdfast::launcher {
namespace {

struct LaunchArgs {
  int np = 0;  // 0: SLURM_NTASKS inside an allocation, else 1
  int max_restarts = 3;
  double restart_delay = 1;
  double grace = 60;
  double kill_after = 10;
  std::string mpirun = "mpirun";
  std::vector<std::string> mpi_args;
  bool no_mpi = false;
  std::vector<std::string> command;
};

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// The signals the launcher handles itself (blocked, read with sigtimedwait).
sigset_t HandledSignals() {
  sigset_t set;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGUSR1, SIGCHLD}) sigaddset(&set, s);
  return set;
}

int DefaultNp() {
  for (const char* name : {"SLURM_NTASKS", "SLURM_NPROCS"}) {
    if (const char* v = std::getenv(name); v != nullptr && std::atoi(v) > 0) return std::atoi(v);
  }
  return 1;
}

std::vector<std::string> JobArgv(const LaunchArgs& a, int np) {
  if (a.no_mpi) return a.command;
  std::vector<std::string> argv = {a.mpirun, "-np", std::to_string(np)};
  const bool in_slurm = std::getenv("SLURM_JOB_ID") != nullptr;
  // On one machine outside a scheduler, more ranks than cores is the user's
  // choice (and how tests run); mpirun refuses it by default.
  if (!in_slurm && np > static_cast<int>(std::thread::hardware_concurrency())) {
    argv.push_back("--oversubscribe");
  }
  if (geteuid() == 0) argv.push_back("--allow-run-as-root");
  argv.insert(argv.end(), a.mpi_args.begin(), a.mpi_args.end());
  argv.insert(argv.end(), a.command.begin(), a.command.end());
  return argv;
}

// Starts argv in its own process group with default signal handling and an
// empty mask (the launcher's blocked set is not inherited), and `extra_env`.
pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
            std::string* error) {
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t empty, defaults = HandledSignals();
  sigemptyset(&empty);
  posix_spawnattr_setsigmask(&attr, &empty);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  std::vector<char*> args;
  for (const auto& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  env_storage.insert(env_storage.end(), extra_env.begin(), extra_env.end());
  std::vector<char*> env;
  for (auto& e : env_storage) env.push_back(e.data());
  env.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], nullptr, &attr, args.data(), env.data());
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    *error = "cannot run " + argv[0] + ": " + std::strerror(rc);
    return -1;
  }
  return pid;
}

struct AttemptResult {
  int exit_code = 0;
  std::string cause;       // "done", "preempted (exit 75)", "failed (exit 1)", "killed by signal 9"
  bool signalled = false;  // the launcher got a stop signal during this attempt
};

// Runs one attempt to its end, forwarding stop signals with the grace rule.
AttemptResult RunAttempt(const LaunchArgs& a, pid_t pid) {
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
      // Whatever the job left in its group (ranks mpirun did not reap).
      kill(-pid, SIGKILL);
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
  const int np = a.np > 0 ? a.np : DefaultNp();
  const std::vector<std::string> argv = JobArgv(a, np);

  // Block the handled signals for the launcher's life; they are read
  // synchronously, so none is lost between two attempts.
  const sigset_t handled = HandledSignals();
  sigset_t previous;
  sigprocmask(SIG_BLOCK, &handled, &previous);

  char report_template[] = "/tmp/holdfast-launch-XXXXXX";
  const int report_fd = mkstemp(report_template);
  if (report_fd >= 0) close(report_fd);
  const std::string report = report_template;

  int code = 0;
  for (int attempt = 1;; ++attempt) {
    std::remove(report.c_str());
    std::string error;
    const auto start = Clock::now();
    const pid_t pid = Spawn(argv,
                            {std::string(kRestoreReportEnv) + "=" + report,
                             "HOLDFAST_ATTEMPT=" + std::to_string(attempt)},
                            &error);
    if (pid < 0) {
      std::fprintf(stderr, "holdfast launch: %s\n", error.c_str());
      code = kExitUsage;
      break;
    }
    const AttemptResult r = RunAttempt(a, pid);
    code = r.exit_code;
    const std::string resumed = ReadReport(report);
    const bool retry = !r.signalled && code != 0 && code != kExitUsage && attempt <= a.max_restarts;
    std::fprintf(stderr, "holdfast launch: attempt %d of at most %d: %s after %.1f s%s%s%s\n",
                 attempt, a.max_restarts + 1, r.cause.c_str(), SecondsSince(start),
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
                   "Ranks (default: SLURM_NTASKS inside a SLURM allocation, else 1)")
      ->check(CLI::PositiveNumber);
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
