// A timing Env for bench/checkpoint: Env::Default() with every file-system
// call of a save or a restore timed by kind, so that a table can say where
// an operation's time went (write, fsync, directory work, or none of them:
// CPU).
#ifndef HOLDFAST_BENCH_CHECKPOINT_TIMING_ENV_H_
#define HOLDFAST_BENCH_CHECKPOINT_TIMING_ENV_H_

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bench/checkpoint/harness.h"
#include "checkpoint/env.h"

namespace checkpoint_bench {

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

  // Each Read timed under the file's kind, as ReadFile is.
  class TimedReader final : public holdfast::RandomAccessFile {
   public:
    TimedReader(TimingEnv* env, std::string kind, std::unique_ptr<holdfast::RandomAccessFile> f)
        : env_(env), kind_(std::move(kind)), file_(std::move(f)) {}
    holdfast::Status Read(uint64_t offset, std::span<char> out) override {
      const auto t0 = Clock::now();
      holdfast::Status s = file_->Read(offset, out);
      env_->Add(kind_, t0, s.ok() ? out.size() : 0);
      return s;
    }

   private:
    TimingEnv* const env_;
    const std::string kind_;
    const std::unique_ptr<holdfast::RandomAccessFile> file_;
  };

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
  holdfast::StatusOr<std::unique_ptr<holdfast::RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) override {
    auto file = base_->NewRandomAccessFile(path);
    if (!file.ok()) return file.status();
    return std::unique_ptr<holdfast::RandomAccessFile>(
        new TimedReader(this, FileKind(path) + "_read", std::move(*file)));
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
  holdfast::StatusOr<std::unique_ptr<holdfast::FileLock>> LockFile(
      const std::string& path, const std::string& holder) override {
    const auto t0 = Clock::now();
    auto r = base_->LockFile(path, holder);
    Add("lock", t0);
    return r;
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

// The Env's calls as JSON: {kind: {seconds, calls, bytes}}.
json StatsJson(const TimingEnv& env);

}  // namespace checkpoint_bench

#endif  // HOLDFAST_BENCH_CHECKPOINT_TIMING_ENV_H_
