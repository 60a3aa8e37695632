// Runs real programs the way a user would, for end-to-end tests: to
// completion (RunProcess), or in the background to signal them, their
// children, or kill them part way (Subprocess).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace holdfast::testing {

struct ProcessResult {
  int exit_code = -1;  // -1: did not exit normally (see signal)
  int signal = 0;      // the signal that ended it, if one did
  std::string out;     // stdout
  std::string err;     // stderr
};

// A program started in the background (no shell) with its output captured
// to temporary files. The destructor kills (SIGKILL) and reaps it if it is
// still running.
class Subprocess {
 public:
  // argv[0] is the program's path; extra environment entries "NAME=value"
  // are added to this process's environment.
  Subprocess(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env = {});
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void Signal(int signal);
  // Waits for the exit and returns the result with both outputs (once: a
  // second call has nothing to wait for and returns exit code 255).
  ProcessResult Wait();
  // Wait() if it ends within `seconds`, else nullopt (still running).
  std::optional<ProcessResult> WaitFor(double seconds);
  // Output so far.
  std::string out() const;
  std::string err() const;

 private:
  ProcessResult Collect(int status);

  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string out_path_, err_path_, spawn_error_;
};

// The environment the tests run mpirun with: allowed as root (CI runs as
// root) and one OpenMP thread per rank.
inline const std::vector<std::string> kMpirunEnv = {
    "OMPI_ALLOW_RUN_AS_ROOT=1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1", "OMP_NUM_THREADS=1"};

// Runs argv to completion (see Subprocess).
ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& extra_env = {});

// Every live process descended from `root` (children, grandchildren, ...),
// from /proc; `name` (if not empty) keeps only those whose comm is `name`
// (at most 15 characters, as the kernel stores it).
std::vector<pid_t> DescendantPids(pid_t root, const std::string& name = "");

// Number of lines in s (a last line without '\n' counts).
int CountLines(const std::string& s);

}  // namespace holdfast::testing
