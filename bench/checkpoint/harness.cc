#include "bench/checkpoint/harness.h"

#include <fcntl.h>
#include <omp.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <system_error>

#include "distribute/mpi_communicator.h"

namespace checkpoint_bench {

namespace fs = std::filesystem;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void Fail(const std::string& what) { throw std::runtime_error(what); }

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

CpuSample SampleCpu() {
  CpuSample c;
  std::ifstream stat("/proc/stat");
  std::string cpu;
  double v[8] = {};
  if (stat >> cpu && cpu == "cpu") {
    for (double& x : v) stat >> x;
    if (stat)
      c.machine_busy =
          (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  struct rusage ru;
  if (::getrusage(RUSAGE_SELF, &ru) == 0) {
    c.self = static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
             static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
  }
  return c;
}

Harness::Harness(const Flags& flags, holdfast::Communicator& comm)
    : f_(flags),
      comm_(comm),
      chief_(comm.rank() == 0),
      world_(comm.size()),
      single_host_(holdfast::MpiCommunicator::LocalRankCount() == comm.size()) {
  std::string name;
  if (chief_) {
    std::string parent = f_.dir;
    if (parent.empty()) parent = fs::read_symlink("/proc/self/exe").parent_path().string();
    parent = fs::absolute(parent).string();
    std::string templ = (fs::path(parent) / "checkpoint-bench-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) {
      name = "-" + Errno("cannot create a scratch directory in", parent);
    } else {
      name = "+";  // not "+" + templ: GCC 12 warns falsely on it (-Wrestrict, bug 105329)
      name += templ;
    }
  }
  name = comm_.BroadcastString(name, 0);
  if (name[0] == '-') throw std::invalid_argument(name.substr(1));
  scratch_ = name.substr(1);
}

Harness::~Harness() {
  if (chief_ && !scratch_.empty()) {
    std::error_code ec;
    fs::remove_all(scratch_, ec);
  }
}

void Harness::Log(const std::string& line) const {
  if (chief_ && !f_.quiet) std::fprintf(stderr, "checkpoint: %s\n", line.c_str());
}

json Harness::GatherJson(const json& mine) {
  const std::vector<std::string> all = comm_.Gather(mine.dump(), 0);
  json out = json::array();
  for (const std::string& s : all) out.push_back(json::parse(s));
  return out;
}

double Harness::ForeignCpuShare(const CpuSample& since) {
  const CpuSample now = SampleCpu();
  double mine[1] = {now.self - since.self};
  comm_.AllReduceSum(std::span<double>(mine, 1));
  const double wall = std::chrono::duration<double>(now.wall - since.wall).count();
  if (since.machine_busy < 0 || now.machine_busy < 0 || wall <= 0 || !single_host_) return -1;
  const double cpus = static_cast<double>(std::max(1, omp_get_num_procs()));
  return std::max(0.0, (now.machine_busy - since.machine_busy - mine[0]) / (wall * cpus));
}

void Harness::RemoveRepeatDir(const std::string& dir) {
  comm_.Barrier();
  if (chief_) {
    fs::remove_all(dir);
    // Let the file system settle the removal (journal, discards) before
    // the next timed write.
    const int fd = ::open(scratch_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      (void)::syncfs(fd);
      ::close(fd);
    }
  }
  comm_.Barrier();
}

json Harness::FilesystemInfo() const {
  json j;
  struct statfs sf;
  if (::statfs(scratch_.c_str(), &sf) == 0) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%lx", static_cast<unsigned long>(sf.f_type));
    j["statfs_type"] = hex;
    j["free_bytes"] = static_cast<uint64_t>(sf.f_bavail) * sf.f_bsize;
  }
  // The mount that holds the scratch directory (longest matching prefix).
  std::ifstream mounts("/proc/self/mounts");
  std::string dev, point, type, opts, rest;
  size_t best = 0;
  while (mounts >> dev >> point >> type >> opts && std::getline(mounts, rest)) {
    const bool under =
        scratch_.rfind(point, 0) == 0 &&
        (point == "/" || scratch_.size() == point.size() || scratch_[point.size()] == '/');
    if (under && point.size() >= best) {
      best = point.size();
      j["device"] = dev;
      j["mount_point"] = point;
      j["type"] = type;
      j["options"] = opts;
    }
  }
  return j;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace checkpoint_bench
