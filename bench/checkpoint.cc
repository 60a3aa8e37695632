// bench/checkpoint: holdfast's checkpoints against raw sequential file I/O of
// the same bytes, and the training stall they cause, in the same run.
//
//   build/bench/checkpoint [--sizes-mb 10,1000] [--json FILE]          one process
//   mpirun -np 2 build/bench/checkpoint ...                             two ranks
//
// io: for each state size, a model whose parameters plus Adam's m and v hold
// that many bytes. Each repeat, in alternating order:
//   save      CheckpointManager::Save into a fresh directory D (the whole
//             two-phase commit: shards, manifest, renames, directory fsyncs);
//   raw write every rank writes the same bytes its shard holds (its 1/W of
//             every blob) straight from memory to D/raw-<rank>.bin with one
//             sequential write loop, fsyncs it, and the chief fsyncs D.
// Then, with the page cache of both dropped (posix_fadvise DONTNEED, checked
// with mincore), RestoreLatest against every rank reading its raw file back
// into the state (cold), and both once more (warm). Each operation is timed
// between barriers (the slowest rank's time). Medians over repeats; the
// ratios are the medians of the per-repeat ratios of neighbouring runs.
// Every file-system call of Save and RestoreLatest goes through a timing Env,
// which splits their time into write, fsync, directory and CPU work.
//
// stall: the big model (784-2048-2048-2048-10, batch 256, dropout 0.2, Adam)
// trained by Fit for --steps steps with BackupAndRestore(save_freq) and
// without, alternating; per save, the step's time minus the median step.
//
// Rank 0 prints tables and JSON. Exit codes: 0 done, 2 usage, 1 failure.
#include <fcntl.h>
#include <omp.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "checkpoint/backup_and_restore.h"
#include "checkpoint/env.h"
#include "checkpoint/manager.h"
#include "core/data_order.h"
#include "core/dataset.h"
#include "core/exit_codes.h"
#include "core/fit.h"
#include "core/hash.h"
#include "core/version.h"
#include "distribute/mirrored_strategy.h"
#include "distribute/mpi_communicator.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

using holdfast::kExitFailure;
using holdfast::kExitUsage;

volatile uint64_t g_sink = 0;

double SecondsSince(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

[[noreturn]] void Fail(const std::string& what) { throw std::runtime_error(what); }

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

// ---------------------------------------------------------------- timing Env

// Time spent in one kind of file-system call.
struct CallStat {
  double seconds = 0;
  int64_t calls = 0;
  uint64_t bytes = 0;
};

// Env::Default() with every call timed by kind. Shard files ("shard-*") and
// the small metadata files (manifest, LATEST) are kept apart.
class TimingEnv final : public holdfast::Env {
 public:
  // Thread-safe, all three: a save fsyncs several files at once, and an
  // asynchronous one makes its calls on a writer thread.
  void Reset() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.clear();
  }
  std::map<std::string, CallStat> stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  double TotalSeconds() const {
    double t = 0;
    for (const auto& [kind, s] : stats()) t += s.seconds;
    return t;
  }
  void Add(const std::string& kind, Clock::time_point t0, uint64_t bytes = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    CallStat& s = stats_[kind];
    s.seconds += SecondsSince(t0);
    ++s.calls;
    s.bytes += bytes;
  }

  holdfast::StatusOr<std::unique_ptr<holdfast::WritableFile>> NewWritableFile(
      const std::string& path) override {
    return Create(path, /*direct=*/false);
  }
  // Forwarded, unlike EnvWrapper: the asynchronous writer must be measured
  // with the O_DIRECT file it uses outside the benchmark.
  holdfast::StatusOr<std::unique_ptr<holdfast::WritableFile>> NewDirectWritableFile(
      const std::string& path) override {
    return Create(path, /*direct=*/true);
  }
  holdfast::StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override {
    const auto t0 = Clock::now();
    auto r = base_->ReadFile(path, max_bytes);
    Add(FileKind(path) + "_read", t0, r.ok() ? r->size() : 0);
    return r;
  }
  holdfast::StatusOr<uint64_t> FileSize(const std::string& path) override {
    const auto t0 = Clock::now();
    auto r = base_->FileSize(path);
    Add("stat", t0);
    return r;
  }
  bool Exists(const std::string& path) override {
    const auto t0 = Clock::now();
    const bool r = base_->Exists(path);
    Add("stat", t0);
    return r;
  }
  holdfast::StatusOr<bool> IsDirectory(const std::string& path) override {
    const auto t0 = Clock::now();
    auto r = base_->IsDirectory(path);
    Add("stat", t0);
    return r;
  }
  holdfast::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    const auto t0 = Clock::now();
    auto r = base_->ListDir(path);
    Add("list_dir", t0);
    return r;
  }
  holdfast::Status CreateDir(const std::string& path) override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->CreateDir(path);
    Add("mkdir", t0);
    return s;
  }
  holdfast::Status Rename(const std::string& from, const std::string& to) override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->Rename(from, to);
    Add("rename", t0);
    return s;
  }
  holdfast::Status SyncDir(const std::string& path) override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->SyncDir(path);
    Add("fsync_dir", t0);
    return s;
  }
  holdfast::Status RemoveFile(const std::string& path) override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->RemoveFile(path);
    Add("remove", t0);
    return s;
  }
  holdfast::Status RemoveDir(const std::string& path) override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->RemoveDir(path);
    Add("remove", t0);
    return s;
  }

  // "shard" for shard files, "meta" for the rest (manifest, LATEST).
  static std::string FileKind(const std::string& path) {
    const size_t slash = path.find_last_of('/');
    const std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    return name.rfind("shard-", 0) == 0 ? "shard" : "meta";
  }

 private:
  holdfast::StatusOr<std::unique_ptr<holdfast::WritableFile>> Create(const std::string& path,
                                                                     bool direct);

  holdfast::Env* base_ = holdfast::Env::Default();
  mutable std::mutex mu_;
  std::map<std::string, CallStat> stats_;
};

class TimedWritableFile final : public holdfast::WritableFile {
 public:
  TimedWritableFile(TimingEnv* env, std::unique_ptr<holdfast::WritableFile> base, std::string kind)
      : env_(env), base_(std::move(base)), kind_(std::move(kind)) {}
  holdfast::Status Append(std::span<const char> data) override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->Append(data);
    env_->Add(kind_ + "_write", t0, data.size());
    return s;
  }
  holdfast::Status Sync() override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->Sync();
    env_->Add(kind_ + "_fsync", t0);
    return s;
  }
  holdfast::Status Close() override {
    const auto t0 = Clock::now();
    holdfast::Status s = base_->Close();
    env_->Add("close", t0);
    return s;
  }

 private:
  TimingEnv* env_;
  std::unique_ptr<holdfast::WritableFile> base_;
  std::string kind_;
};

holdfast::StatusOr<std::unique_ptr<holdfast::WritableFile>> TimingEnv::Create(
    const std::string& path, bool direct) {
  const auto t0 = Clock::now();
  auto r = direct ? base_->NewDirectWritableFile(path) : base_->NewWritableFile(path);
  Add("create", t0);
  if (!r.ok()) return r.status();
  return std::unique_ptr<holdfast::WritableFile>(
      new TimedWritableFile(this, std::move(*r), FileKind(path)));
}

// ---------------------------------------------------------------- raw file I/O

void WriteAll(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) Fail(Errno("write", path));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void ReadAll(int fd, void* data, size_t bytes, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::read(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) Fail(n < 0 ? Errno("read", path) : path + ": short read");
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

void SyncPath(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) Fail(Errno("open", path));
  if (::fsync(fd) != 0) Fail(Errno("fsync", path));
  ::close(fd);
}

// This rank's slice of every blob: the bytes its shard holds.
std::vector<std::span<float>> MySlices(holdfast::Checkpoint& ckpt, int rank, int world) {
  std::vector<std::span<float>> out;
  for (const holdfast::NamedBlob& blob : ckpt.Blobs()) {
    const holdfast::Range r =
        holdfast::ReplicaSlice(static_cast<int64_t>(blob.values.size()), rank, world);
    out.push_back(blob.values.subspan(static_cast<size_t>(r.begin), static_cast<size_t>(r.size())));
  }
  return out;
}

// Where a raw write's time went on this rank.
struct RawWriteSplit {
  double write = 0, fsync = 0, fsync_dir = 0;
};

// The reference save: this rank's bytes, one sequential write loop, fsync,
// close; then (after every rank is done) the chief fsyncs the directory so
// the new names are durable too.
RawWriteSplit RawWrite(holdfast::Communicator& comm, const std::string& path,
                       const std::vector<std::span<float>>& slices, const std::string& dir) {
  RawWriteSplit split;
  auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) Fail(Errno("create", path));
  for (std::span<float> s : slices) WriteAll(fd, s.data(), s.size_bytes(), path);
  split.write = SecondsSince(t0);
  t0 = Clock::now();
  if (::fsync(fd) != 0) Fail(Errno("fsync", path));
  if (::close(fd) != 0) Fail(Errno("close", path));
  split.fsync = SecondsSince(t0);
  comm.Barrier();
  if (comm.rank() == 0) {
    t0 = Clock::now();
    SyncPath(dir, O_RDONLY | O_DIRECTORY);
    split.fsync_dir = SecondsSince(t0);
  }
  return split;
}

void RawRead(const std::string& path, const std::vector<std::span<float>>& slices) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) Fail(Errno("open", path));
  for (std::span<float> s : slices) ReadAll(fd, s.data(), s.size_bytes(), path);
  ::close(fd);
}

// Asks the kernel to drop the (clean, fsynced) pages of every file under
// `dir` from the page cache.
void DropPageCache(const std::string& dir) {
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    (void)::fdatasync(fd);  // pages under writeback would stay
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
}

// The share of the pages of the files under `dir` that are in the page
// cache (mincore), and the worst file's name and share, for the record.
std::pair<double, std::string> ResidentShare(const std::string& dir) {
  uint64_t pages = 0, resident = 0;
  double worst = -1;
  std::string worst_name;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const int fd = ::open(entry.path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat st;
    if (::fstat(fd, &st) == 0 && st.st_size > 0) {
      const size_t bytes = static_cast<size_t>(st.st_size);
      void* map = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
      if (map != MAP_FAILED) {
        std::vector<unsigned char> vec((bytes + page - 1) / page);
        if (::mincore(map, bytes, vec.data()) == 0) {
          uint64_t in = 0;
          for (unsigned char c : vec) in += c & 1;
          pages += vec.size();
          resident += in;
          const double share = static_cast<double>(in) / static_cast<double>(vec.size());
          if (share > worst) {
            worst = share;
            worst_name = entry.path().filename().string();
          }
        }
        ::munmap(map, bytes);
      }
    }
    ::close(fd);
  }
  char note[64];
  std::snprintf(note, sizeof note, " (%.0f%%)", worst * 100);
  return {pages ? static_cast<double>(resident) / static_cast<double>(pages) : 0.0,
          worst_name + note};
}

// Per-repeat ratios of two operations that alternate which runs first. On a
// VM the second one is systematically slower (it allocates memory the host
// took back meanwhile), so the ratio is the geometric mean of the medians of
// the two orders: the order effect cancels instead of following the parity
// of the repeat count.
struct OrderedRatios {
  std::vector<double> first, second;  // holdfast ran first / second
  void Add(bool holdfast_first, double ratio) {
    (holdfast_first ? first : second).push_back(ratio);
  }
  double Combined() const {
    if (first.empty() || second.empty()) return Median(first.empty() ? second : first);
    return std::sqrt(Median(first) * Median(second));
  }
  json Json() const {
    return {{"holdfast_first", first},
            {"raw_first", second},
            {"median_holdfast_first", Median(first)},
            {"median_raw_first", Median(second)}};
  }
};

// ---------------------------------------------------------------- CPU share

// Busy CPU seconds of the whole machine (user, nice, system, irq, softirq,
// steal from /proc/stat) and of this process (all its threads).
struct CpuSample {
  double machine_busy = -1, self = 0;
  Clock::time_point wall = Clock::now();
};

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

// ---------------------------------------------------------------- the bench

struct Flags {
  std::vector<std::string> modes = {"io", "stall"};
  std::vector<double> sizes_mb = {10, 1000};
  int repeats = 6;
  double settle_seconds = 3;
  std::string dir;  // parent of the scratch directory; "": beside the executable
  std::string json_path;
  // stall
  std::string data = holdfast::kFashionMnistDir;
  bool synthetic = false;
  std::vector<int> hidden = {2048, 2048, 2048};
  int64_t batch = 256;
  float dropout = 0.2f;
  int64_t steps = 60;
  int64_t save_freq = 10;
  int stall_repeats = 3;
  int threads = 0;
  bool async_checkpoint = false;
  bool quick = false;
  bool quiet = false;
};

// Every collective below is issued by every rank in the same order.
class Bench {
 public:
  Bench(const Flags& f, holdfast::AutoStrategy& strategy)
      : f_(f),
        strategy_(strategy),
        comm_(strategy.communicator()),
        chief_(comm_.rank() == 0),
        world_(comm_.size()),
        single_host_(holdfast::MpiCommunicator::LocalRankCount() == comm_.size()) {}
  ~Bench() {
    if (chief_ && !scratch_.empty()) {
      std::error_code ec;
      fs::remove_all(scratch_, ec);
    }
  }

  json Run() {
    if (std::find(f_.modes.begin(), f_.modes.end(), "stall") != f_.modes.end()) LoadData();
    MakeScratch();
    json out;
    out["benchmark"] = "checkpoint";
    out["world_size"] = world_;
    out["holdfast_version"] = HOLDFAST_VERSION;
    out["scratch_dir"] = scratch_;
    out["filesystem"] = FilesystemInfo();
    out["load_average_start"] = LoadAverage();
    for (const std::string& mode : f_.modes) {
      if (mode == "io") out["io"] = RunIo();
      if (mode == "stall") out["stall"] = RunStall();
    }
    out["load_average_end"] = LoadAverage();
    comm_.Barrier();
    return out;
  }

 private:
  void Log(const std::string& line) const {
    if (chief_ && !f_.quiet) std::fprintf(stderr, "checkpoint: %s\n", line.c_str());
  }

  // The stall mode's training data, loaded before anything is measured so a
  // missing data set fails at once. Synthetic data (uniform pixels, labels
  // 0..9) when asked or when there are too few samples: the content does not
  // change a step's cost.
  void LoadData() {
    const int64_t samples = f_.steps * f_.batch;
    if (f_.synthetic) {
      data_source_ = "synthetic";
    } else {
      auto data = holdfast::LoadFashionMnist(f_.data);
      if (!data.ok()) {
        throw std::invalid_argument("cannot load data (use --synthetic to do without): " +
                                    data.status().message());
      }
      train_ = data->train.Head(samples);
      data_source_ = f_.data;
    }
    if (train_.size() < samples) {
      train_.x = (holdfast::Matrix::Random(samples, 784).array() + 1.0f) * 0.5f;
      train_.y = holdfast::Matrix(samples, 1);
      for (int64_t i = 0; i < samples; ++i) train_.y(i, 0) = static_cast<float>(i % 10);
      if (!f_.synthetic) data_source_ += " (too few samples: synthetic used)";
    }
  }

  // The chief makes a fresh scratch directory; every rank learns its name.
  void MakeScratch() {
    std::string name;
    if (chief_) {
      std::string parent = f_.dir;
      if (parent.empty()) parent = fs::read_symlink("/proc/self/exe").parent_path().string();
      parent = fs::absolute(parent).string();
      std::string templ = (fs::path(parent) / "checkpoint-bench-XXXXXX").string();
      if (::mkdtemp(templ.data()) == nullptr) {
        name = "-" + Errno("cannot create a scratch directory in", parent);
      } else {
        name = "+" + templ;
      }
    }
    name = comm_.BroadcastString(name, 0);
    if (name[0] == '-') throw std::invalid_argument(name.substr(1));
    scratch_ = name.substr(1);
  }

  json FilesystemInfo() const {
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

  static std::string LoadAverage() {
    std::ifstream in("/proc/loadavg");
    std::string line;
    std::getline(in, line);
    return line;
  }

  // The share of all CPUs that other processes (and kernel threads, such as
  // the file system's writeback) used since `since`: machine busy time minus
  // this job's, over wall time x CPUs. Collective. -1 when unknown (ranks on
  // several hosts, or no /proc/stat).
  double ForeignCpuShare(const CpuSample& since) {
    const CpuSample now = SampleCpu();
    double mine[1] = {now.self - since.self};
    comm_.AllReduceSum(std::span<double>(mine, 1));
    const double wall = std::chrono::duration<double>(now.wall - since.wall).count();
    if (since.machine_busy < 0 || now.machine_busy < 0 || wall <= 0 || !single_host_) return -1;
    const double cpus = static_cast<double>(std::max(1, omp_get_num_procs()));
    return std::max(0.0, (now.machine_busy - since.machine_busy - mine[0]) / (wall * cpus));
  }

  // The slowest rank's time of `fn`, called on every rank between barriers,
  // after --settle-seconds of rest: memory freed by the previous operation
  // (encode buffers, page cache of removed files) is cheap to reuse at once
  // and dear later on a VM that hands free memory back to its host, so
  // whichever operation ran first got it cheap. After a rest every operation
  // starts from the same state, as a save does after minutes of training.
  template <typename Fn>
  double Timed(Fn&& fn) {
    comm_.Barrier();
    if (f_.settle_seconds > 0) {
      std::this_thread::sleep_for(std::chrono::duration<double>(f_.settle_seconds));
      comm_.Barrier();
    }
    const auto t0 = Clock::now();
    fn();
    comm_.Barrier();
    return SecondsSince(t0);
  }

  // Per-rank numbers to the chief, as one JSON array (rank order).
  json GatherJson(const json& mine) {
    const std::vector<std::string> all = comm_.Gather(mine.dump(), 0);
    json out = json::array();
    for (const std::string& s : all) out.push_back(json::parse(s));
    return out;
  }

  static json StatsJson(const TimingEnv& env) {
    json j = json::object();
    for (const auto& [kind, s] : env.stats()) {
      j[kind] = {{"seconds", s.seconds}, {"calls", s.calls}, {"bytes", s.bytes}};
    }
    return j;
  }

  void RemoveRepeatDir(const std::string& dir) {
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

  // ------------------------------------------------------------ io mode

  json RunIo() {
    json sizes = json::array();
    std::vector<json> rows;
    for (double mb : f_.sizes_mb) rows.push_back(IoOneSize(mb));
    for (const json& r : rows) sizes.push_back(r);
    if (chief_) PrintIo(rows);
    return {{"read_mode",
             "cold: page cache of every file dropped with posix_fadvise(DONTNEED) "
             "before the read (clean pages after fsync); warm: read again right "
             "after. The hypervisor's own cache, if any, is not dropped."},
            {"raw_reference",
             "every rank writes its 1/W of the state bytes (its shard's slices) from memory with "
             "one sequential write loop, fsync, close; then the chief fsyncs the directory. Read: "
             "every rank reads its raw file back into the state."},
            {"sizes", sizes}};
  }

  json IoOneSize(double mb) {
    // Params plus Adam's m and v: three blobs of P floats, P = 2 * units for
    // Dense(units) on one input (plus alignment padding).
    const double target_bytes = mb * 1e6;
    const int units = std::max(8, static_cast<int>(target_bytes / 24.0));
    holdfast::Sequential model(1);
    model.Add<holdfast::Dense>(units);
    model.Build(7);
    holdfast::Adam adam;
    adam.Build(model.store().size());
    // Optimizer slots hold non-trivial values, as in a real run.
    {
      auto slots = adam.slots();
      auto params = model.store().params();
      for (auto& slot : slots) {
        for (size_t i = 0; i < slot.values.size(); ++i) slot.values[i] = params[i] * 0.5f;
      }
    }
    adam.set_iterations(1000);
    holdfast::Checkpoint ckpt(&model, &adam);
    ckpt.counters["bench/size"] = static_cast<int64_t>(mb);
    uint64_t state_bytes = 0;
    for (const holdfast::NamedBlob& b : ckpt.Blobs()) state_bytes += b.values.size_bytes();
    const std::vector<std::span<float>> slices = MySlices(ckpt, comm_.rank(), world_);
    uint64_t my_bytes = 0;
    for (auto s : slices) my_bytes += s.size_bytes();
    const uint64_t hash = StateHash(ckpt);

    const int repeats = f_.repeats;
    std::vector<double> save, raw_w, restore_cold, raw_r_cold, restore_warm, raw_r_warm;
    // Ratios raw time / holdfast time, by which of the two ran first.
    OrderedRatios r_save, r_restore_cold, r_restore_warm;
    std::vector<double> resident, hash_s, copy_s;
    json save_breakdowns = json::array(), restore_breakdowns = json::array();
    json raw_split = json::array();
    const CpuSample cpu0 = SampleCpu();
    uint64_t checkpoint_bytes = 0;
    char label[64];
    std::snprintf(label, sizeof label, "%.0f MB", static_cast<double>(state_bytes) / 1e6);
    for (int r = 0; r < repeats + 1; ++r) {  // repeat 0 warms up, not recorded
      const bool record = r > 0;
      Log(std::string("io ") + label + (record ? ", repeat " + std::to_string(r) : ", warm-up"));
      const std::string dir = (fs::path(scratch_) / ("rep-" + std::to_string(r))).string();
      if (chief_) fs::create_directories(dir);
      comm_.Barrier();
      const std::string raw_path =
          (fs::path(dir) / ("raw-" + std::to_string(comm_.rank()) + ".bin")).string();

      TimingEnv env;
      holdfast::CheckpointOptions co;
      co.directory = dir;
      co.max_to_keep = 1;
      co.env = &env;
      holdfast::CheckpointManager manager(&ckpt, &comm_, co);

      double t_save = 0, t_raw = 0;
      RawWriteSplit split;
      auto do_save = [&] {
        env.Reset();
        t_save = Timed([&] {
          const holdfast::Status s = manager.Save();
          if (!s.ok()) Fail("save failed: " + s.ToString());
        });
      };
      auto do_raw = [&] { t_raw = Timed([&] { split = RawWrite(comm_, raw_path, slices, dir); }); };
      if (r % 2) {
        do_save();
        do_raw();
      } else {
        do_raw();
        do_save();
      }
      save_breakdowns.push_back(record ? GatherJson(StatsJson(env)) : json());
      if (chief_ && checkpoint_bytes == 0) {
        for (const auto& e : fs::recursive_directory_iterator(dir)) {
          if (e.is_regular_file() && e.path().filename().string().rfind("raw-", 0) != 0)
            checkpoint_bytes += e.file_size();
        }
      }

      // Restore, cold then warm, alternating with the raw read. Reading one
      // never warms the other's files, so a single drop serves both.
      double t_rc = 0, t_rawc = 0, t_rw = 0, t_raww = 0;
      json restore_env;
      auto do_restore = [&](double* t) {
        std::vector<std::span<float>> all;
        for (const holdfast::NamedBlob& b : ckpt.Blobs()) all.push_back(b.values);
        Scribble(all);
        holdfast::CheckpointManager reader(&ckpt, &comm_, co);
        env.Reset();
        *t = Timed([&] {
          auto restored = reader.RestoreLatest();
          if (!restored.ok()) Fail("restore failed: " + restored.status().ToString());
          if (!restored->has_value()) Fail("restore found no checkpoint in " + dir);
        });
        if (StateHash(ckpt) != hash) Fail("restored state differs from the saved one");
      };
      auto do_raw_read = [&](double* t) {
        Scribble(slices);  // only this rank's slices: those it reads back
        *t = Timed([&] { RawRead(raw_path, slices); });
        if (StateHash(ckpt) != hash) Fail("raw read gave other bytes than were written");
      };
      DropPageCache(dir);
      comm_.Barrier();
      double res = 0;
      if (chief_) {
        const auto [share, worst] = ResidentShare(dir);
        res = share;
        if (share > 0.01) Log("pages still cached after the drop: " + worst);
      }
      comm_.Barrier();
      if (r % 2) {
        do_restore(&t_rc);
        restore_env = StatsJson(env);
        do_raw_read(&t_rawc);
        do_raw_read(&t_raww);
        do_restore(&t_rw);
      } else {
        do_raw_read(&t_rawc);
        do_restore(&t_rc);
        restore_env = StatsJson(env);
        do_restore(&t_rw);
        do_raw_read(&t_raww);
      }
      restore_breakdowns.push_back(record ? GatherJson(restore_env) : json());
      // Calibrations, untimed against the others: XXH3 of this rank's bytes,
      // and one copy of them into freshly allocated memory (page faults
      // included), the unit cost of a serialisation copy.
      const auto th = Clock::now();
      uint64_t sink = 0;
      for (auto s : slices) sink ^= holdfast::Xxh3(std::span<const float>(s));
      const double t_hash = SecondsSince(th);
      const auto tc = Clock::now();
      {
        std::unique_ptr<char[]> copy(new char[my_bytes]);
        char* p = copy.get();
        for (auto s : slices) {
          std::memcpy(p, s.data(), s.size_bytes());
          p += s.size_bytes();
        }
        sink ^= static_cast<uint64_t>(copy[my_bytes / 2]);
      }
      const double t_copy = SecondsSince(tc);
      g_sink = sink;  // keeps the hash and the copy from being optimised away
      RemoveRepeatDir(dir);
      if (!record) continue;
      raw_split.push_back(GatherJson(
          {{"write", split.write}, {"fsync", split.fsync}, {"fsync_dir", split.fsync_dir}}));
      save.push_back(t_save);
      raw_w.push_back(t_raw);
      restore_cold.push_back(t_rc);
      raw_r_cold.push_back(t_rawc);
      restore_warm.push_back(t_rw);
      raw_r_warm.push_back(t_raww);
      // Odd repeats run holdfast first, even ones the raw reference.
      r_save.Add(r % 2 == 1, t_raw / t_save);
      r_restore_cold.Add(r % 2 == 1, t_rawc / t_rc);
      r_restore_warm.Add(r % 2 == 1, t_raww / t_rw);
      resident.push_back(res);
      hash_s.push_back(t_hash);
      copy_s.push_back(t_copy);
    }
    const double foreign = ForeignCpuShare(cpu0);
    const double gb = static_cast<double>(state_bytes) / 1e9;
    json j = {{"target_mb", mb},
              {"foreign_cpu_share", foreign},
              {"state_bytes", state_bytes},
              {"checkpoint_bytes", checkpoint_bytes},
              {"bytes_per_rank", my_bytes},
              {"repeats", repeats},
              {"settle_seconds", f_.settle_seconds},
              {"save_seconds", save},
              {"raw_write_seconds", raw_w},
              {"restore_cold_seconds", restore_cold},
              {"raw_read_cold_seconds", raw_r_cold},
              {"restore_warm_seconds", restore_warm},
              {"raw_read_warm_seconds", raw_r_warm},
              {"resident_share_after_drop", resident},
              {"chief_hash_seconds", hash_s},
              {"chief_copy_seconds", copy_s},
              {"save_gbps", gb / Median(save)},
              {"raw_write_gbps", gb / Median(raw_w)},
              {"restore_cold_gbps", gb / Median(restore_cold)},
              {"raw_read_cold_gbps", gb / Median(raw_r_cold)},
              {"restore_warm_gbps", gb / Median(restore_warm)},
              {"raw_read_warm_gbps", gb / Median(raw_r_warm)},
              {"save_over_raw", r_save.Combined()},
              {"restore_cold_over_raw", r_restore_cold.Combined()},
              {"restore_warm_over_raw", r_restore_warm.Combined()},
              {"save_over_raw_by_order", r_save.Json()},
              {"restore_cold_over_raw_by_order", r_restore_cold.Json()},
              {"restore_warm_over_raw_by_order", r_restore_warm.Json()},
              {"save_over_raw_of_medians", Median(raw_w) / Median(save)},
              {"restore_cold_over_raw_of_medians", Median(raw_r_cold) / Median(restore_cold)},
              {"save_env_per_rank", save_breakdowns},
              {"raw_write_split_per_rank", raw_split},
              {"restore_env_per_rank", restore_breakdowns}};
    // The chief's breakdown, medians over repeats, for the table.
    j["save_breakdown_chief"] = Breakdown(save_breakdowns, save);
    j["restore_breakdown_chief"] = Breakdown(restore_breakdowns, restore_cold);
    if (chief_) {
      std::vector<double> w, fsync, fsync_dir;
      for (const json& rep : raw_split) {
        w.push_back(rep[0]["write"].get<double>());
        fsync.push_back(rep[0]["fsync"].get<double>());
        fsync_dir.push_back(rep[0]["fsync_dir"].get<double>());
      }
      j["raw_write_breakdown_chief"] = {{"total", Median(raw_w)},
                                        {"shard_write", Median(w)},
                                        {"shard_fsync", Median(fsync)},
                                        {"dir_fsync", Median(fsync_dir)}};
    }
    return j;
  }

  // Median seconds per group of Env calls on the chief, and the rest of the
  // operation's time (CPU work: encoding, hashing, copies, JSON, collectives).
  static json Breakdown(const json& per_repeat, const std::vector<double>& totals) {
    static const std::vector<std::pair<std::string, std::vector<std::string>>> kGroups = {
        {"shard_write", {"shard_write"}},
        {"shard_fsync", {"shard_fsync"}},
        {"shard_read", {"shard_read"}},
        {"meta_files", {"meta_write", "meta_fsync", "meta_read", "create", "close"}},
        {"dir_fsync", {"fsync_dir"}},
        {"dir_ops", {"mkdir", "rename", "remove", "list_dir", "stat"}},
    };
    json out = json::object();
    std::vector<double> rest;
    std::map<std::string, std::vector<double>> groups;
    size_t k = 0;
    for (const json& rep : per_repeat) {
      if (!rep.is_array() || rep.empty()) continue;  // warm-up, or not the chief
      const json& chief = rep.at(0);
      double env_total = 0;
      for (const auto& [group, kinds] : kGroups) {
        double t = 0;
        for (const std::string& kind : kinds) {
          if (chief.contains(kind)) t += chief[kind]["seconds"].get<double>();
        }
        groups[group].push_back(t);
        env_total += t;
      }
      if (k < totals.size()) rest.push_back(totals[k] - env_total);
      ++k;
    }
    for (const auto& [group, v] : groups) out[group] = Median(v);
    out["not_file_system"] = Median(rest);
    out["total"] = Median(totals);
    return out;
  }

  // Marks each span's first and last float, so that a read that does not
  // overwrite all of them fails the hash check after it.
  static void Scribble(const std::vector<std::span<float>>& spans) {
    for (std::span<float> s : spans) {
      if (s.empty()) continue;
      s.front() += 1.0f;
      s.back() -= 1.0f;
    }
  }

  uint64_t StateHash(holdfast::Checkpoint& c) {
    uint64_t h = 0;
    for (const holdfast::NamedBlob& b : c.Blobs()) {
      h = h * 1000003 ^ holdfast::Xxh3(std::span<const float>(b.values));
    }
    return h;
  }

  void PrintIo(const std::vector<json>& rows) const {
    std::printf(
        "\ncheckpoint I/O, np=%d, median of %d (GB = 1e9 bytes of state: params + Adam m, v)\n",
        world_, f_.repeats);
    std::printf(
        "save = CheckpointManager::Save; raw = write loop + fsync + fsync dir, same bytes, "
        "same directory\n");
    std::printf("%9s %9s %9s %9s %9s %9s | %9s %9s %9s | %9s %9s %9s\n", "state MB", "save s",
                "raw s", "save GB/s", "raw GB/s", "save/raw", "rest.cold", "raw cold", "rest/raw",
                "rest.warm", "raw warm", "rest/raw");
    for (const json& j : rows) {
      const double mb = j["state_bytes"].get<double>() / 1e6;
      std::printf("%9.1f %9.3f %9.3f %9.2f %9.2f %9.2f | %9.2f %9.2f %9.2f | %9.2f %9.2f %9.2f\n",
                  mb, Median(j["save_seconds"].get<std::vector<double>>()),
                  Median(j["raw_write_seconds"].get<std::vector<double>>()),
                  j["save_gbps"].get<double>(), j["raw_write_gbps"].get<double>(),
                  j["save_over_raw"].get<double>(), j["restore_cold_gbps"].get<double>(),
                  j["raw_read_cold_gbps"].get<double>(), j["restore_cold_over_raw"].get<double>(),
                  j["restore_warm_gbps"].get<double>(), j["raw_read_warm_gbps"].get<double>(),
                  j["restore_warm_over_raw"].get<double>());
    }
    std::printf(
        "(restore and raw read columns in GB/s; ratios = raw time / holdfast time, geometric mean "
        "of the medians of the repeats that ran holdfast first and of those that ran raw first)"
        "\n");
    std::printf("\nwhere the chief's time goes (median ms)\n");
    std::printf("%9s %-7s %8s %8s %8s %8s %8s %8s %8s | %8s %8s\n", "state MB", "op", "total",
                "shard wr", "fsync", "shard rd", "meta", "dirfsync", "dir ops", "CPU etc", "xxh3");
    for (const json& j : rows) {
      const double mb = j["state_bytes"].get<double>() / 1e6;
      const double hash = Median(j["chief_hash_seconds"].get<std::vector<double>>());
      const json& raw = j["raw_write_breakdown_chief"];
      std::printf("%9.1f %-7s %8.1f %8.1f %8.1f %8s %8s %8.1f %8s | %8s %8s\n", mb, "raw wr",
                  raw["total"].get<double>() * 1e3, raw["shard_write"].get<double>() * 1e3,
                  raw["shard_fsync"].get<double>() * 1e3, "", "",
                  raw["dir_fsync"].get<double>() * 1e3, "", "", "");
      for (const char* op : {"save", "restore"}) {
        const json& b = j[std::string(op) + "_breakdown_chief"];
        std::printf("%9.1f %-7s %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f | %8.1f %8.1f\n", mb, op,
                    b["total"].get<double>() * 1e3, b["shard_write"].get<double>() * 1e3,
                    b["shard_fsync"].get<double>() * 1e3, b["shard_read"].get<double>() * 1e3,
                    b["meta_files"].get<double>() * 1e3, b["dir_fsync"].get<double>() * 1e3,
                    b["dir_ops"].get<double>() * 1e3, b["not_file_system"].get<double>() * 1e3,
                    hash * 1e3);
      }
      double max_res = 0;
      for (double v : j["resident_share_after_drop"]) max_res = std::max(max_res, v);
      if (j["foreign_cpu_share"].get<double>() > 0.05)
        std::printf(
            "  note: other processes used %.0f%% of the CPUs meanwhile: numbers are noisy\n",
            j["foreign_cpu_share"].get<double>() * 100);
      if (max_res > 0.05)
        std::printf(
            "  note: %.0f%% of the files' pages stayed cached after the drop: the cold "
            "reads were partly warm\n",
            max_res * 100);
    }
    std::printf(
        "(CPU etc = total - file-system calls: encoding, hashing, copies, JSON, waiting "
        "for other ranks; xxh3 = hashing this rank's bytes once, for scale. restore is "
        "the cold one.)\n");
  }

  // ------------------------------------------------------------ stall mode

  // Wall time of every step, measured between consecutive OnBatchEnd calls
  // (so it includes the data gather, forward, backward, sync, update and the
  // callbacks before this one: the save), which steps saved, and the
  // file-system calls of each save (from the timing Env, reset every step).
  class StepTimer final : public holdfast::Callback {
   public:
    StepTimer(const holdfast::BackupAndRestore* backup, TimingEnv* env)
        : backup_(backup), env_(env) {}
    void OnBatchBegin(holdfast::TrainingState&) override {
      if (started_) return;
      started_ = true;
      last_ = Clock::now();
      last_saves_ = backup_ ? backup_->save_stats().started : 0;
      if (env_) env_->Reset();
    }
    void OnBatchEnd(holdfast::TrainingState&) override {
      const auto now = Clock::now();
      seconds.push_back(std::chrono::duration<double>(now - last_).count());
      last_ = now;
      // Begun, not committed: an asynchronous save commits steps later, and
      // its stall is the step that began it.
      const int64_t saves = backup_ ? backup_->save_stats().started : 0;
      const bool did_save = saves != last_saves_;
      last_saves_ = saves;
      saved.push_back(did_save);
      if (env_ && did_save) {
        save_env.push_back(StatsJson(*env_));
        save_env_seconds.push_back(env_->TotalSeconds());
      }
      if (env_) env_->Reset();
    }
    std::vector<double> seconds;
    std::vector<bool> saved;
    std::vector<json> save_env;            // per save: its file-system calls
    std::vector<double> save_env_seconds;  // per save: their total time

   private:
    const holdfast::BackupAndRestore* backup_;
    TimingEnv* env_;
    bool started_ = false;
    Clock::time_point last_;
    int64_t last_saves_ = 0;
  };

  json RunStall() {
    omp_set_num_threads(
        f_.threads > 0
            ? f_.threads
            : std::max(1, omp_get_num_procs() / holdfast::MpiCommunicator::LocalRankCount()));
    const holdfast::Dataset& train = train_;
    holdfast::Sequential model(784);
    for (int w : f_.hidden) {
      model.Add<holdfast::Dense>(w).Add<holdfast::ReLU>();
      if (f_.dropout > 0) model.Add<holdfast::Dropout>(f_.dropout);
    }
    model.Add<holdfast::Dense>(10);
    model.Build(42);
    holdfast::Adam adam(1e-3f);
    adam.Build(model.store().size());
    holdfast::SoftmaxCrossEntropy loss;
    const uint64_t state_bytes = 3 * model.store().size() * sizeof(float);

    const std::string backup_dir = (fs::path(scratch_) / "stall-backup").string();
    TimingEnv env;  // reset by the StepTimer at every step
    holdfast::BackupAndRestoreOptions bo;
    bo.checkpoint.directory = backup_dir;
    bo.checkpoint.max_to_keep = 1;  // as Keras' callback
    bo.checkpoint.env = &env;
    bo.checkpoint.async = f_.async_checkpoint;
    bo.save_freq = f_.save_freq;
    bo.delete_checkpoint = true;  // each run starts fresh
    bo.fail_on_save_error = true;

    struct RunResult {
      std::vector<double> seconds;
      std::vector<bool> saved;
      std::vector<json> save_env;
      std::vector<double> save_env_seconds;
      double foreign_cpu_share = -1;
      int64_t waits = 0;       // async saves that waited for the previous one
      double snapshot_ms = 0;  // async: mean time of the state copy per save
    };
    auto train_once = [&](bool with_saves, int64_t steps) {
      holdfast::BackupAndRestore backup(bo, &comm_);
      StepTimer timer(with_saves ? &backup : nullptr, with_saves ? &env : nullptr);
      holdfast::FitOptions options;
      options.epochs = 1;
      options.batch_size = f_.batch;
      options.seed = 42;
      options.replica = &strategy_.strategy();
      if (with_saves) options.callbacks.push_back(&backup);
      options.callbacks.push_back(&timer);  // last: its step time includes the save
      const holdfast::Dataset part = train.Head(steps * f_.batch);
      const CpuSample cpu0 = SampleCpu();
      holdfast::Fit(model, adam, loss, part, options);
      RunResult run{timer.seconds, timer.saved, timer.save_env, timer.save_env_seconds, -1};
      if (with_saves) {
        const holdfast::SaveStats st = backup.save_stats();
        run.waits = st.waits;
        run.snapshot_ms =
            st.started > 0 ? st.snapshot_seconds * 1e3 / static_cast<double>(st.started) : 0;
      }
      run.foreign_cpu_share = ForeignCpuShare(cpu0);
      if (with_saves && backup.saves_failed() > 0) Fail("a save failed during training");
      return run;
    };

    // Warm-up: BLAS threads, page faults of the activations, the first save.
    Log("stall: warm-up");
    (void)train_once(true, std::min<int64_t>(f_.steps, f_.save_freq + 2));
    json runs = json::array();
    std::vector<double> base_ms, mean_ms, save_step_ms, stall_ms, stall_share, total_on, total_off,
        overhead, save_fs_ms, foreign;
    std::map<std::string, std::vector<double>> fs_groups;  // per save, by kind of call
    for (int r = 0; r < f_.stall_repeats; ++r) {
      RunResult with_run, without_run;
      for (int k = 0; k < 2; ++k) {
        const bool with_saves = (k == 0) == (r % 2 == 1);
        Log(std::string("stall: repeat ") + std::to_string(r + 1) + ", " +
            (with_saves ? "saving every " + std::to_string(f_.save_freq) + " steps" : "no saves"));
        (with_saves ? with_run : without_run) = train_once(with_saves, f_.steps);
      }
      // Step 0 carries Fit's start (broadcast, first touch): left out.
      auto steady = [](const RunResult& run) {
        std::vector<double> v;
        for (size_t i = 1; i < run.seconds.size(); ++i)
          if (!run.saved[i]) v.push_back(run.seconds[i]);
        return v;
      };
      auto total = [](const RunResult& run) {
        double t = 0;
        for (size_t i = 1; i < run.seconds.size(); ++i) t += run.seconds[i];
        return t;
      };
      const std::vector<double> steady_without = steady(without_run);
      const double base = Median(steady_without);
      const double base_with = Median(steady(with_run));
      std::vector<double> stalls, saves_t;
      for (size_t i = 1; i < with_run.seconds.size(); ++i) {
        if (!with_run.saved[i]) continue;
        saves_t.push_back(with_run.seconds[i]);
        stalls.push_back(with_run.seconds[i] - base_with);
      }
      double mean_stall = 0, mean_step = 0, mean_save_step = 0;
      for (double x : stalls) mean_stall += x / static_cast<double>(stalls.size());
      for (double x : saves_t) mean_save_step += x / static_cast<double>(saves_t.size());
      for (double x : steady_without) mean_step += x / static_cast<double>(steady_without.size());
      for (double x : with_run.save_env_seconds) save_fs_ms.push_back(x * 1e3);
      for (const json& e : with_run.save_env) {
        for (const auto& [group, kinds] : StallGroups()) {
          double t = 0;
          for (const std::string& kind : kinds)
            if (e.contains(kind)) t += e[kind]["seconds"].get<double>();
          fs_groups[group].push_back(t * 1e3);
        }
      }
      base_ms.push_back(base * 1e3);
      mean_ms.push_back(mean_step * 1e3);
      save_step_ms.push_back(mean_save_step * 1e3);
      stall_ms.push_back(mean_stall * 1e3);
      stall_share.push_back(mean_stall / base);
      total_on.push_back(total(with_run));
      total_off.push_back(total(without_run));
      overhead.push_back(total(with_run) / total(without_run) - 1);
      foreign.push_back(std::max(with_run.foreign_cpu_share, without_run.foreign_cpu_share));
      runs.push_back({{"repeat", r},
                      {"with_saves",
                       {{"step_seconds", with_run.seconds},
                        {"saved", with_run.saved},
                        {"save_file_system_calls", with_run.save_env},
                        {"waits", with_run.waits},
                        {"snapshot_ms", with_run.snapshot_ms},
                        {"foreign_cpu_share", with_run.foreign_cpu_share}}},
                      {"without_saves",
                       {{"step_seconds", without_run.seconds},
                        {"foreign_cpu_share", without_run.foreign_cpu_share}}},
                      {"median_step_seconds_without", base},
                      {"median_step_seconds_with_non_save_steps", base_with},
                      {"saves", stalls.size()},
                      {"mean_stall_seconds_per_save", mean_stall}});
    }
    const double step_ms = Median(base_ms);
    const double stall = Median(stall_ms);
    // The reference of an asynchronous save's stall: copying this rank's
    // share of the state once in memory, into a buffer already touched.
    const size_t share_floats = state_bytes / sizeof(float) / static_cast<size_t>(world_);
    std::vector<float> from(share_floats, 1.0f), to(share_floats, 0.0f);
    std::vector<double> memcpy_ms;
    for (int i = 0; i < 7; ++i) {
      const auto t0 = Clock::now();
      std::memcpy(to.data(), from.data(), share_floats * sizeof(float));
      memcpy_ms.push_back(std::chrono::duration<double>(Clock::now() - t0).count() * 1e3);
      from[static_cast<size_t>(i)] = to[share_floats - 1 - static_cast<size_t>(i)];
    }
    const double copy_ms = Median(memcpy_ms);
    int64_t waits = 0;
    std::vector<double> snapshot_ms;
    for (const json& run : runs) {
      waits += run["with_saves"]["waits"].get<int64_t>();
      snapshot_ms.push_back(run["with_saves"]["snapshot_ms"].get<double>());
    }
    json fs_breakdown = json::object();
    for (const auto& [group, v] : fs_groups) fs_breakdown[group] = Median(v);
    fs_breakdown["total"] = Median(save_fs_ms);
    json j = {
        {"hidden", f_.hidden},
        {"batch", f_.batch},
        {"dropout", f_.dropout},
        {"optimizer", adam.Signature()},
        {"data", data_source_},
        {"threads", omp_get_max_threads()},
        {"steps_per_run", f_.steps},
        {"save_freq", f_.save_freq},
        {"repeats", f_.stall_repeats},
        {"state_bytes", state_bytes},
        {"median_step_ms", step_ms},
        {"mean_step_ms", Median(mean_ms)},
        {"mean_save_step_ms", Median(save_step_ms)},
        {"async", f_.async_checkpoint},
        {"stall_ms_per_save", stall},
        {"memcpy_ms_per_rank", copy_ms},
        {"stall_over_memcpy", stall / copy_ms},
        {"async_waits", waits},
        {"snapshot_ms_per_save", Median(snapshot_ms)},
        {"stall_share_of_step", Median(stall_share)},
        {"save_file_system_ms_chief", fs_breakdown},
        // What saving every save_freq steps costs, from the stall per save,
        // and as measured on whole runs (noisier).
        {"overhead_share_from_stall", Median(stall_share) / static_cast<double>(f_.save_freq)},
        {"overhead_share_measured", Median(overhead)},
        {"total_seconds_with_saves", total_on},
        {"total_seconds_without_saves", total_off},
        {"foreign_cpu_share", foreign},
        {"runs", runs},
    };
    if (chief_) {
      std::printf(
          "\ntraining stall per save, np=%d x %d threads: %s, batch %lld, Adam, %.0f MB "
          "of state, save every %lld steps, %lld steps per run, median of %d\n",
          world_, omp_get_max_threads(), HiddenLabel().c_str(), static_cast<long long>(f_.batch),
          static_cast<double>(state_bytes) / 1e6, static_cast<long long>(f_.save_freq),
          static_cast<long long>(f_.steps), f_.stall_repeats);
      std::printf("%9s %9s %9s %9s %10s %12s %14s\n", "step ms", "save step", "stall ms",
                  "stall/step", "overhead", "overhead", "other CPU use");
      std::printf("%9s %9s %9s %9s %10s %12s %14s\n", "(median)", "ms", "per save", "",
                  ("1/" + std::to_string(f_.save_freq) + " steps").c_str(), "measured", "(max)");
      double max_foreign = 0;
      for (double x : foreign) max_foreign = std::max(max_foreign, x);
      std::printf("%9.1f %9.1f %9.1f %9.2f %9.1f%% %11.1f%% %13.0f%%\n", step_ms,
                  Median(save_step_ms), stall, Median(stall_share),
                  Median(stall_share) / static_cast<double>(f_.save_freq) * 100,
                  Median(overhead) * 100, max_foreign * 100);
      std::printf(
          "(save step = mean time of the steps that saved; stall = that minus the "
          "median other step of the same run; overhead = stall / (%lld x median step of "
          "the run without saves); measured = run time with saves / without - 1)\n",
          static_cast<long long>(f_.save_freq));
      std::printf(
          "%s saves; copying this rank's %.0f MB share in memory takes %.1f ms: stall / copy = "
          "%.2f; the save's own snapshot took %.1f ms; saves that waited for the previous one: "
          "%lld\n",
          f_.async_checkpoint ? "asynchronous" : "synchronous",
          static_cast<double>(share_floats * sizeof(float)) / 1e6, copy_ms, stall / copy_ms,
          Median(snapshot_ms), static_cast<long long>(waits));
      std::printf("file-system calls of a save on the chief, median ms:");
      for (const auto& [group, v] : fs_breakdown.items())
        std::printf(" %s %.1f,", group.c_str(), v.get<double>());
      std::printf(" rest of the stall (CPU: encoding, hashing, JSON; waiting for ranks) %.1f\n",
                  stall - fs_breakdown["total"].get<double>());
    }
    return j;
  }

  static const std::vector<std::pair<std::string, std::vector<std::string>>>& StallGroups() {
    static const std::vector<std::pair<std::string, std::vector<std::string>>> kGroups = {
        {"shard_write", {"shard_write"}},
        {"shard_fsync", {"shard_fsync"}},
        {"meta_files", {"meta_write", "meta_fsync", "meta_read", "create", "close"}},
        {"dir_fsync", {"fsync_dir"}},
        {"remove_old", {"remove"}},
        {"dir_ops", {"mkdir", "rename", "list_dir", "stat"}},
    };
    return kGroups;
  }

  std::string HiddenLabel() const {
    std::string s = "784";
    for (int w : f_.hidden) s += "-" + std::to_string(w);
    return s + "-10";
  }

  const Flags& f_;
  holdfast::AutoStrategy& strategy_;
  holdfast::Communicator& comm_;
  const bool chief_;
  const int world_;
  const bool single_host_;
  std::string scratch_;
  holdfast::Dataset train_;
  std::string data_source_;
};

void ParseFlags(CLI::App& app, Flags& f) {
  app.description(
      "holdfast checkpoints against raw sequential file I/O of the same bytes (save, restore), "
      "and the training stall per save on the big model. Run alone or under mpirun.\n"
      "Exit codes: 0 done, 2 usage or bad input, 1 other failure.");
  app.add_option("--mode", f.modes, "What to measure: io, stall (comma separated)")
      ->delimiter(',')
      ->check(CLI::IsMember({"io", "stall"}))
      ->capture_default_str();
  app.add_option("--sizes-mb", f.sizes_mb, "io: state sizes in MB (1e6 bytes), comma separated")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--repeats", f.repeats, "io: repeats per size (after one warm-up)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--settle-seconds", f.settle_seconds,
                 "io: rest before every timed operation, so that none inherits memory the "
                 "previous one freed (see bench/README.md); 0: none")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--dir", f.dir,
                 "Parent of the scratch directory (default: beside this executable); it is "
                 "created fresh and removed at the end");
  app.add_option("--json", f.json_path, "Also write the JSON to FILE");
  app.add_option("--data", f.data, "stall: Fashion-MNIST directory")->capture_default_str();
  app.add_flag("--synthetic", f.synthetic, "stall: random data instead of Fashion-MNIST");
  app.add_flag("--async-checkpoint", f.async_checkpoint,
               "stall: asynchronous saves (BackupAndRestoreOptions::async)");
  app.add_option("--hidden", f.hidden, "stall: hidden layer widths")
      ->delimiter(',')
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--batch", f.batch, "stall: global batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--dropout", f.dropout, "stall: dropout after each hidden layer")
      ->check(CLI::Range(0.0f, 0.999f))
      ->capture_default_str();
  app.add_option("--steps", f.steps, "stall: steps per training run")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--save-freq", f.save_freq, "stall: save every N steps")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--stall-repeats", f.stall_repeats,
                 "stall: runs with and without saves (alternating)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--threads", f.threads,
                 "stall: threads per process (0: the host's cores divided by its ranks)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_flag("--quick", f.quick,
               "Small and fast (for testing): 10 MB only, 2 repeats, 30 steps, 1 stall repeat, "
               "0.5 s settle, unless given");
  app.add_flag("--quiet", f.quiet, "No progress lines on stderr");
  app.set_version_flag("--version", std::string("holdfast ") + HOLDFAST_VERSION);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("bench/checkpoint");
  Flags flags;
  ParseFlags(app, flags);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "checkpoint: %s (see --help)\n", e.what());
    return kExitUsage;
  }
  if (flags.quick) {  // only where the flag was not given
    if (app.count("--sizes-mb") == 0) flags.sizes_mb = {10};
    if (app.count("--repeats") == 0) flags.repeats = 2;
    if (app.count("--steps") == 0) flags.steps = 30;
    if (app.count("--stall-repeats") == 0) flags.stall_repeats = 1;
    if (app.count("--settle-seconds") == 0) flags.settle_seconds = 0.5;
  }
  holdfast::AutoStrategy strategy;
  holdfast::Communicator& comm = strategy.communicator();
  try {
    json out;
    {
      Bench bench(flags, strategy);
      out = bench.Run();
    }  // the scratch directory is gone from here on
    if (comm.rank() == 0) {
      std::printf("\n%s\n", out.dump().c_str());
      if (!flags.json_path.empty()) {
        std::ofstream file(flags.json_path);
        file << out.dump(2) << '\n';
        if (!file) throw std::runtime_error("cannot write " + flags.json_path);
      }
    }
    return 0;
  } catch (const std::invalid_argument& e) {
    holdfast::EndJob(comm, kExitUsage, "checkpoint", e.what());
  } catch (const std::exception& e) {
    holdfast::EndJob(comm, kExitFailure, "checkpoint", e.what());
  }
}
