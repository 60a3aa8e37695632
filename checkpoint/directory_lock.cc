#include "checkpoint/directory_lock.h"

#include <unistd.h>

#include <filesystem>
#include <map>
#include <mutex>
#include <system_error>
#include <vector>

#include "checkpoint/internal/manager_internal.h"
#include "cluster/cluster_spec.h"

namespace holdfast {
namespace {

class HeldDirectory final : public DirectoryLock {
 public:
  explicit HeldDirectory(std::unique_ptr<FileLock> file) : file_(std::move(file)) {}

 private:
  std::unique_ptr<FileLock> file_;
};

// The directories this process holds, by canonical path: flock locks belong
// to an open file, so a second lock from this process would refuse it.
std::mutex g_mu;
std::map<std::string, std::weak_ptr<DirectoryLock>> g_held;  // guarded by g_mu

// `dir` and each missing parent, outermost first.
Status MakeDirectories(Env* env, const std::string& dir) {
  std::vector<std::string> chain;
  for (std::string p = dir; !p.empty() && p != "." && p != "/"; p = ParentDir(p))
    chain.push_back(p);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    if (const StatusOr<bool> is_dir = env->IsDirectory(*it); is_dir.ok() && *is_dir) continue;
    HOLDFAST_RETURN_IF_ERROR(env->CreateDir(*it));  // OK for a link to a directory too
  }
  return Status::Ok();
}

}  // namespace

StatusOr<std::shared_ptr<DirectoryLock>> LockDirectory(Env* env, const std::string& dir,
                                                       const std::string& holder) {
  if (const Status made = MakeDirectories(env, dir); !made.ok()) {
    return InvalidArgumentError("cannot keep checkpoints in " + dir + ": " + made.message());
  }
  std::error_code ec;
  std::string key = std::filesystem::weakly_canonical(dir, ec).string();
  if (ec) key = dir;
  std::lock_guard<std::mutex> lock(g_mu);
  std::erase_if(g_held, [](const auto& entry) { return entry.second.expired(); });
  if (std::shared_ptr<DirectoryLock> held = g_held[key].lock()) return held;
  StatusOr<std::unique_ptr<FileLock>> file = env->LockFile(JoinPath(dir, kLockFile), holder);
  if (!file.ok()) {
    if (file.status().code() == StatusCode::kUnavailable) {
      return UnavailableError(dir + " is in use by another job: " + file.status().message());
    }
    return InvalidArgumentError("cannot keep checkpoints in " + dir + ": " +
                                file.status().message());
  }
  std::shared_ptr<DirectoryLock> held = std::make_shared<HeldDirectory>(std::move(*file));
  g_held[key] = held;
  return held;
}

std::string ThisProcessAsHolder() {
  const ClusterSpec cluster = ClusterSpec::FromEnvironment();
  std::string line = "host " + (cluster.host.empty() ? std::string("?") : cluster.host) + ", pid " +
                     std::to_string(::getpid());
  if (cluster.in_slurm()) line += ", SLURM job " + cluster.job_id;
  return line + ", since " + internal::UtcNow(internal::UnixNow());
}

}  // namespace holdfast
