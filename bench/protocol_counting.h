// Counting seams for measuring the checkpoint protocol per rank (issue 18):
// an Env that counts the bytes, files and fsyncs of every rank, and a
// Communicator that counts every collective a rank issues, by kind, with the
// bytes it moves. Used by bench/protocol and tests/checkpoint/
// protocol_scale_test.cc over in-process ranks (threads), where one Env
// serves every rank.
//
// Attribution. In-process ranks share the Env, so each rank's function names
// its rank for its thread first (ScopedRank). A file is counted to the rank
// that opened it, whichever thread later appends to it, syncs or reads it;
// an Env call from a thread that named no rank (SaveSync's SyncTogether runs
// the chief's manifest and directory fsyncs on helper threads) is counted to
// kNoRank. Synchronous saves only: an asynchronous save's writer thread would
// be kNoRank too.
#pragma once

#include <omp.h>
#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "checkpoint/env.h"
#include "core/status.h"
#include "distribute/communicator.h"
#include "distribute/thread_communicator.h"

namespace holdfast::bench {

// CPU seconds the calling thread has used (CLOCK_THREAD_CPUTIME_ID): a rank's
// own work, whatever the other in-process ranks do on the same cores.
inline double ThreadCpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

// The rank an Env call made on this thread is counted to.
inline constexpr int kNoRank = -1;
inline thread_local int tls_counted_rank = kNoRank;

// Names the calling thread's rank for CountingEnv while it lives.
class ScopedRank {
 public:
  explicit ScopedRank(int rank) : previous_(tls_counted_rank) { tls_counted_rank = rank; }
  ~ScopedRank() { tls_counted_rank = previous_; }
  ScopedRank(const ScopedRank&) = delete;
  ScopedRank& operator=(const ScopedRank&) = delete;

 private:
  const int previous_;
};

// What one rank did to storage.
struct IoCounts {
  uint64_t bytes_written = 0;  // WritableFile::Append
  uint64_t bytes_read = 0;     // RandomAccessFile::Read and ReadFile
  int64_t files_created = 0;   // NewWritableFile (NewDirectWritableFile too)
  int64_t files_read = 0;      // NewRandomAccessFile and ReadFile
  int64_t locks = 0;           // LockFile: opens (or creates) the lock file
  int64_t file_syncs = 0;      // WritableFile::Sync
  int64_t dir_syncs = 0;       // Env::SyncDir
  // FileSize, Exists, IsDirectory, ListDir, CreateDir, Rename, RemoveFile,
  // RemoveDir: no data, but each a round trip to a shared file system.
  int64_t metadata_ops = 0;

  int64_t files_opened() const { return files_created + files_read + locks; }
  int64_t fsyncs() const { return file_syncs + dir_syncs; }
  IoCounts& operator+=(const IoCounts& o) {
    bytes_written += o.bytes_written;
    bytes_read += o.bytes_read;
    files_created += o.files_created;
    files_read += o.files_read;
    locks += o.locks;
    file_syncs += o.file_syncs;
    dir_syncs += o.dir_syncs;
    metadata_ops += o.metadata_ops;
    return *this;
  }
};

// An Env that counts, per rank, what passes through it to `base`, and logs
// every read (which bytes of which file, by whom) and every file opened.
// Thread-safe: one mutex guards the counts (never held across a base call).
// `base` must outlive it, and so must every file it returned.
class CountingEnv final : public EnvWrapper {
 public:
  struct Read {
    int rank = kNoRank;
    std::string path;
    uint64_t offset = 0, bytes = 0;
  };
  struct Open {
    int rank = kNoRank;
    std::string kind;  // "write", "read", "read whole", "lock"
    std::string path;
  };

  explicit CountingEnv(Env* base = Env::Default()) : EnvWrapper(base) {}

  StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    const int rank = tls_counted_rank;
    auto file = base()->NewWritableFile(path);
    if (!file.ok()) return file;
    Note(rank, "write", path, [](IoCounts& c) { ++c.files_created; });
    return std::unique_ptr<WritableFile>(new File(this, rank, std::move(*file)));
  }
  StatusOr<std::string> ReadFile(const std::string& path, uint64_t max_bytes) override {
    const int rank = tls_counted_rank;
    auto text = base()->ReadFile(path, max_bytes);
    if (!text.ok()) return text;
    Note(rank, "read whole", path, [](IoCounts& c) { ++c.files_read; });
    Count(rank, [&](IoCounts& c) { c.bytes_read += text->size(); });
    LogRead(rank, path, 0, text->size());
    return text;
  }
  StatusOr<std::unique_ptr<RandomAccessFile>> NewRandomAccessFile(
      const std::string& path) override {
    const int rank = tls_counted_rank;
    auto file = base()->NewRandomAccessFile(path);
    if (!file.ok()) return file;
    Note(rank, "read", path, [](IoCounts& c) { ++c.files_read; });
    return std::unique_ptr<RandomAccessFile>(new ReadableFile(this, rank, path, std::move(*file)));
  }
  StatusOr<std::unique_ptr<FileLock>> LockFile(const std::string& path,
                                               const std::string& holder) override {
    const int rank = tls_counted_rank;
    auto lock = base()->LockFile(path, holder);
    if (lock.ok()) Note(rank, "lock", path, [](IoCounts& c) { ++c.locks; });
    return lock;
  }
  Status SyncDir(const std::string& path) override {
    Count(tls_counted_rank, [](IoCounts& c) { ++c.dir_syncs; });
    return base()->SyncDir(path);
  }
  StatusOr<uint64_t> FileSize(const std::string& path) override {
    CountMetadata();
    return base()->FileSize(path);
  }
  bool Exists(const std::string& path) override {
    CountMetadata();
    return base()->Exists(path);
  }
  StatusOr<bool> IsDirectory(const std::string& path) override {
    CountMetadata();
    return base()->IsDirectory(path);
  }
  StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    CountMetadata();
    return base()->ListDir(path);
  }
  Status CreateDir(const std::string& path) override {
    CountMetadata();
    return base()->CreateDir(path);
  }
  Status Rename(const std::string& from, const std::string& to) override {
    CountMetadata();
    return base()->Rename(from, to);
  }
  Status RemoveFile(const std::string& path) override {
    CountMetadata();
    return base()->RemoveFile(path);
  }
  Status RemoveDir(const std::string& path) override {
    CountMetadata();
    return base()->RemoveDir(path);
  }

  // Rank r's counts (kNoRank: calls from threads that named no rank).
  IoCounts counts(int rank) const {
    std::lock_guard lock(mu_);
    const auto it = counts_.find(rank);
    return it == counts_.end() ? IoCounts{} : it->second;
  }
  std::vector<Read> reads() const {
    std::lock_guard lock(mu_);
    return reads_;
  }
  std::vector<Open> opens() const {
    std::lock_guard lock(mu_);
    return opens_;
  }
  // Forgets everything counted so far (call with no rank running).
  void Reset() {
    std::lock_guard lock(mu_);
    counts_.clear();
    reads_.clear();
    opens_.clear();
  }

 private:
  class File final : public WritableFile {
   public:
    File(CountingEnv* env, int rank, std::unique_ptr<WritableFile> base)
        : env_(env), rank_(rank), base_(std::move(base)) {}
    Status Append(std::span<const char> data) override {
      env_->Count(rank_, [&](IoCounts& c) { c.bytes_written += data.size(); });
      return base_->Append(data);
    }
    Status Sync() override {
      env_->Count(rank_, [](IoCounts& c) { ++c.file_syncs; });
      return base_->Sync();
    }
    Status Close() override { return base_->Close(); }

   private:
    CountingEnv* const env_;
    const int rank_;
    const std::unique_ptr<WritableFile> base_;
  };

  class ReadableFile final : public RandomAccessFile {
   public:
    ReadableFile(CountingEnv* env, int rank, std::string path,
                 std::unique_ptr<RandomAccessFile> base)
        : env_(env), rank_(rank), path_(std::move(path)), base_(std::move(base)) {}
    Status Read(uint64_t offset, std::span<char> out) override {
      env_->Count(rank_, [&](IoCounts& c) { c.bytes_read += out.size(); });
      env_->LogRead(rank_, path_, offset, out.size());
      return base_->Read(offset, out);
    }

   private:
    CountingEnv* const env_;
    const int rank_;
    const std::string path_;
    const std::unique_ptr<RandomAccessFile> base_;
  };

  template <class Fn>
  void Count(int rank, Fn&& fn) {
    std::lock_guard lock(mu_);
    fn(counts_[rank]);
  }
  template <class Fn>
  void Note(int rank, const char* kind, const std::string& path, Fn&& fn) {
    std::lock_guard lock(mu_);
    fn(counts_[rank]);
    opens_.push_back({rank, kind, path});
  }
  void CountMetadata() {
    Count(tls_counted_rank, [](IoCounts& c) { ++c.metadata_ops; });
  }
  void LogRead(int rank, const std::string& path, uint64_t offset, uint64_t bytes) {
    std::lock_guard lock(mu_);
    reads_.push_back({rank, path, offset, bytes});
  }

  mutable std::mutex mu_;
  std::map<int, IoCounts> counts_;
  std::vector<Read> reads_;
  std::vector<Open> opens_;
};

// The collectives a Communicator offers, as CountingCommunicator counts them.
enum class Collective { kAllReduce, kBroadcast, kGather, kAllGather, kBarrier };
inline constexpr Collective kCollectives[] = {Collective::kAllReduce, Collective::kBroadcast,
                                              Collective::kGather, Collective::kAllGather,
                                              Collective::kBarrier};
inline const char* CollectiveName(Collective kind) {
  switch (kind) {
    case Collective::kAllReduce:
      return "allreduce";
    case Collective::kBroadcast:
      return "broadcast";
    case Collective::kGather:
      return "gather";
    case Collective::kAllGather:
      return "allgather";
    case Collective::kBarrier:
      return "barrier";
  }
  return "?";
}

// One rank's calls of one kind and the payload bytes they moved, seen from
// this rank: what it contributed (sent) and what reached it from other ranks
// (received). AllReduce: its buffer both ways (sent = received = count x
// size). Broadcast: the root sends the bytes, every other rank receives them.
// Gather: each rank sends its string; the root receives the others' strings
// (its own stays in memory). AllGather: its own part sent, the others'
// parts received. Barrier: no bytes.
struct CollectiveCounts {
  int64_t calls = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;
};

// A Communicator that passes every collective to `base` and counts it. The
// non-virtual helpers (BroadcastString, GatherStatus, AllReduceMinMax, ...)
// are built on the virtuals, so they count as the collectives they issue:
// BroadcastString is two broadcasts (length, then bytes), as over MPI.
// Also keeps the thread CPU time spent inside collectives, so that a rank's
// own work can be told from the copying a collective does (in-process
// ranks copy the bytes on the receiving rank's thread). One per rank; used
// by one thread at a time, as any Communicator. `base` must outlive it.
class CountingCommunicator final : public Communicator {
 public:
  explicit CountingCommunicator(Communicator& base) : base_(base) {}

  int rank() const override { return base_.rank(); }
  int size() const override { return base_.size(); }
  std::string kind() const override { return base_.kind(); }

  void AllReduce(void* data, size_t count, DataType type, ReduceOp op) override {
    const uint64_t bytes = count * DataTypeSize(type);
    Timed(Collective::kAllReduce, bytes, bytes, [&] { base_.AllReduce(data, count, type, op); });
  }
  void Broadcast(void* data, size_t bytes, int root) override {
    const bool sends = rank() == root;
    Timed(Collective::kBroadcast, sends ? bytes : 0, sends ? 0 : bytes,
          [&] { base_.Broadcast(data, bytes, root); });
  }
  std::vector<std::string> Gather(const std::string& bytes, int root) override {
    std::vector<std::string> out;
    Timed(Collective::kGather, bytes.size(), 0, [&] { out = base_.Gather(bytes, root); });
    uint64_t received = 0;
    for (size_t r = 0; r < out.size(); ++r) {
      if (static_cast<int>(r) != rank()) received += out[r].size();
    }
    at(Collective::kGather).bytes_received += received;
    return out;
  }
  void AllGather(void* data, std::span<const Part> parts) override {
    uint64_t all = 0;
    for (const Part& p : parts) all += p.bytes;
    const uint64_t own = parts[static_cast<size_t>(rank())].bytes;
    Timed(Collective::kAllGather, own, all - own, [&] { base_.AllGather(data, parts); });
  }
  void Barrier() override {
    Timed(Collective::kBarrier, 0, 0, [&] { base_.Barrier(); });
  }
  [[noreturn]] void Abort(int exit_code, const std::string& why) override {
    base_.Abort(exit_code, why);
    std::abort();  // not reached: GCC does not carry [[noreturn]] through a virtual call
  }
  void NoteStep(int64_t step) override { base_.NoteStep(step); }

  const CollectiveCounts& counts(Collective kind) const {
    return counts_[static_cast<size_t>(kind)];
  }
  int64_t calls() const {
    int64_t n = 0;
    for (const CollectiveCounts& c : counts_) n += c.calls;
    return n;
  }
  // Sent plus received, over every kind.
  uint64_t bytes_moved() const {
    uint64_t n = 0;
    for (const CollectiveCounts& c : counts_) n += c.bytes_sent + c.bytes_received;
    return n;
  }
  double cpu_seconds_in_collectives() const { return cpu_seconds_; }
  void Reset() {
    for (CollectiveCounts& c : counts_) c = {};
    cpu_seconds_ = 0;
  }

 private:
  CollectiveCounts& at(Collective kind) { return counts_[static_cast<size_t>(kind)]; }
  template <class Fn>
  void Timed(Collective kind, uint64_t sent, uint64_t received, Fn&& fn) {
    CollectiveCounts& c = at(kind);
    ++c.calls;
    c.bytes_sent += sent;
    c.bytes_received += received;
    const double t0 = ThreadCpuSeconds();
    fn();
    cpu_seconds_ += ThreadCpuSeconds() - t0;
  }

  Communicator& base_;
  CollectiveCounts counts_[std::size(kCollectives)] = {};
  double cpu_seconds_ = 0;
};

// One rank's counts over the measured part of RunCounted.
struct RankCounts {
  IoCounts io;
  CollectiveCounts collectives[std::size(kCollectives)] = {};
  int64_t collective_calls = 0;
  uint64_t collective_bytes = 0;  // sent plus received
  double cpu_seconds = 0;         // this rank's thread, over the measured call
  double cpu_seconds_in_collectives = 0;

  const CollectiveCounts& of(Collective kind) const {
    return collectives[static_cast<size_t>(kind)];
  }
};

struct CountedRun {
  std::vector<RankCounts> ranks;  // by rank
  IoCounts no_rank;               // Env calls from threads that named no rank
  double wall_seconds = 0;        // the measured part, first rank in to last one out
};

// Runs a measured call on `world` in-process ranks: on each, `prepare(comm)`
// builds what the call needs (returning it, any movable type; it must not
// use `env`), then after a barrier `measured(counted, prepared)` runs with a
// CountingCommunicator over the rank's communicator, its rank named for
// `env` (reset first), and its thread CPU time taken around it. OpenMP is
// held to one thread on each rank, so that all of a rank's work runs on its
// own thread and shows in its CPU time (a restore hashes its share on a
// second thread when OpenMP offers more than one). An exception on any rank
// is rethrown (see RunInProcessRanks).
template <class Prepare, class Measured>
CountedRun RunCounted(int world, CountingEnv& env, Prepare&& prepare, Measured&& measured) {
  using Clock = std::chrono::steady_clock;
  CountedRun run;
  run.ranks.resize(static_cast<size_t>(world));
  env.Reset();
  Clock::time_point start, end;
  RunInProcessRanks(world, [&](Communicator& comm) {
    omp_set_num_threads(1);
    auto prepared = prepare(comm);
    comm.Barrier();
    if (comm.rank() == 0) start = Clock::now();
    const ScopedRank named(comm.rank());
    CountingCommunicator counted(comm);
    const double cpu0 = ThreadCpuSeconds();
    measured(static_cast<Communicator&>(counted), prepared);
    const double cpu = ThreadCpuSeconds() - cpu0;
    RankCounts& mine = run.ranks[static_cast<size_t>(comm.rank())];
    for (Collective kind : kCollectives) {
      mine.collectives[static_cast<size_t>(kind)] = counted.counts(kind);
    }
    mine.collective_calls = counted.calls();
    mine.collective_bytes = counted.bytes_moved();
    mine.cpu_seconds = cpu;
    mine.cpu_seconds_in_collectives = counted.cpu_seconds_in_collectives();
    comm.Barrier();
    if (comm.rank() == 0) end = Clock::now();
  });
  for (int r = 0; r < world; ++r) run.ranks[static_cast<size_t>(r)].io = env.counts(r);
  run.no_rank = env.counts(kNoRank);
  run.wall_seconds = std::chrono::duration<double>(end - start).count();
  return run;
}

}  // namespace holdfast::bench
