// Process supervision for `holdfast launch`: starting programs in their own
// process group with clean signal state, reading a program's output, and
// ending what an attempt left behind.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace holdfast::launcher {

// The signals the launcher handles itself (blocked, read with sigtimedwait).
sigset_t HandledSignals();

// Starts argv in its own process group with default signal handling and an
// empty mask (the launcher's blocked set is not inherited), and `extra_env`;
// `quiet`: stdin, stdout and stderr on /dev/null. -1 and *error on failure.
pid_t Spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
            std::string* error, bool quiet = false);

// Runs argv (no shell) and returns what it printed on stdout, or nullopt
// when it could not run or did not exit 0.
std::optional<std::string> OutputOf(const std::vector<std::string>& argv);

// This process's children, from /proc (a subreaper's adopted orphans too).
std::vector<pid_t> Children();

// Ends and reaps what the last attempt left behind outside its process group:
// processes that outlived their parent and were re-parented to this launcher
// (a child subreaper, see Launch); not the children it had when it started
// (`inherited`, e.g. a shell's process substitution). The srun through which
// mpirun starts its daemons on the other nodes of a SLURM allocation runs in
// a group of its own, and one that cannot reach a lost node outlives mpirun.
void EndLeftovers(const std::vector<pid_t>& inherited);

}  // namespace holdfast::launcher
