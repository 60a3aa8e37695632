// One job per checkpoint directory (README: "One job per directory"), as
// LevelDB holds its LOCK file: the directory is made ready for a run and held
// for it, so that a second job on it, a path that is a file and a directory
// the job cannot write all stop the run at its start, not at its end.
#pragma once

#include <memory>
#include <string>

#include "checkpoint/env.h"
#include "core/status.h"

namespace holdfast {

inline constexpr char kLockFile[] = "LOCK";

// Held for as long as any copy lives.
class DirectoryLock {
 public:
  virtual ~DirectoryLock() = default;
};

// Creates `dir` and its missing parents and takes the exclusive lock on
// DIR/LOCK, writing `holder` into it. Within one process a directory already
// held is shared: the same lock comes back while any copy lives (in-process
// ranks, a second manager in a test). Errors, one line each naming `dir`:
// Unavailable "DIR is in use by another job: <its holder line>";
// InvalidArgument when DIR (or a parent) is a file or cannot be created or
// written ("cannot keep checkpoints in DIR: ...").
StatusOr<std::shared_ptr<DirectoryLock>> LockDirectory(Env* env, const std::string& dir,
                                                       const std::string& holder);

// This process's holder line: "host n1, pid 4242, SLURM job 117, since
// 2026-12-06T15:02:11Z" (no job outside SLURM).
std::string ThisProcessAsHolder();

}  // namespace holdfast
