#include "tests/testutil/subprocess.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

extern char** environ;

namespace holdfast::testing {
namespace {

std::string Slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

Subprocess::Subprocess(const std::vector<std::string>& argv,
                       const std::vector<std::string>& extra_env) {
  char out_path[] = "/tmp/holdfast-out-XXXXXX";
  char err_path[] = "/tmp/holdfast-err-XXXXXX";
  const int out_fd = mkstemp(out_path), err_fd = mkstemp(err_path);
  out_path_ = out_path;
  err_path_ = err_path;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out_fd, STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err_fd, STDERR_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);

  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  for (const auto& e : extra_env) env_storage.push_back(e);
  std::vector<char*> env;
  for (auto& e : env_storage) env.push_back(e.data());
  env.push_back(nullptr);

  if (posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), env.data()) != 0) {
    pid_ = -1;
    spawn_error_ = "posix_spawn failed for " + argv[0];
  }
  posix_spawn_file_actions_destroy(&actions);
  close(out_fd);
  close(err_fd);
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !reaped_) {
    kill(pid_, SIGKILL);
    int status;
    waitpid(pid_, &status, 0);
  }
  unlink(out_path_.c_str());
  unlink(err_path_.c_str());
}

bool Subprocess::running() {
  if (pid_ <= 0 || reaped_) return false;
  return !WaitFor(0).has_value();
}

void Subprocess::Signal(int signal) {
  if (pid_ > 0 && !reaped_) kill(pid_, signal);
}

ProcessResult Subprocess::Collect(int status) {
  reaped_ = true;
  ProcessResult result;
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  result.out = out();
  result.err = spawn_error_ + err();
  return result;
}

ProcessResult Subprocess::Wait() {
  if (pid_ <= 0 || reaped_) return Collect(0xff00);  // exit code 255: nothing to wait for
  int status = 0;
  waitpid(pid_, &status, 0);
  return Collect(status);
}

std::optional<ProcessResult> Subprocess::WaitFor(double seconds) {
  if (pid_ <= 0 || reaped_) return Wait();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (true) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) return Collect(status);
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string Subprocess::out() const { return Slurp(out_path_); }
std::string Subprocess::err() const { return Slurp(err_path_); }

ProcessResult RunProcess(const std::vector<std::string>& argv,
                         const std::vector<std::string>& extra_env) {
  Subprocess process(argv, extra_env);
  return process.Wait();
}

std::vector<pid_t> DescendantPids(pid_t root, const std::string& name) {
  // pid -> (parent, comm) of every process.
  std::map<pid_t, std::pair<pid_t, std::string>> table;
  if (DIR* proc = opendir("/proc")) {
    while (dirent* entry = readdir(proc)) {
      const pid_t pid = static_cast<pid_t>(std::atoi(entry->d_name));
      if (pid <= 0) continue;
      // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces.
      const std::string stat = Slurp("/proc/" + std::string(entry->d_name) + "/stat");
      const size_t open = stat.find('('), close = stat.rfind(')');
      if (open == std::string::npos || close == std::string::npos) continue;
      char state = 0;
      int ppid = 0;
      if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) != 2) continue;
      if (state == 'Z') continue;
      table[pid] = {ppid, stat.substr(open + 1, close - open - 1)};
    }
    closedir(proc);
  }
  std::vector<pid_t> out;
  for (const auto& [pid, info] : table) {
    for (pid_t p = info.first; p > 1; p = table.count(p) ? table[p].first : 0) {
      if (p == root) {
        if (name.empty() || info.second == name) out.push_back(pid);
        break;
      }
    }
  }
  return out;
}

int CountLines(const std::string& s) {
  int lines = 0;
  for (char c : s) lines += c == '\n';
  if (!s.empty() && s.back() != '\n') ++lines;
  return lines;
}

}  // namespace holdfast::testing
