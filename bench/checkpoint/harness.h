// bench/checkpoint's shared parts: its flags, the small statistics it reports
// with, and the Harness that every mode measures through (the scratch
// directory, barriers around a timed operation, per-rank numbers to the
// chief, the CPU other processes took meanwhile).
#ifndef HOLDFAST_BENCH_CHECKPOINT_HARNESS_H_
#define HOLDFAST_BENCH_CHECKPOINT_HARNESS_H_

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "bench/median.h"
#include "core/dataset.h"
#include "distribute/communicator.h"

namespace checkpoint_bench {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

double SecondsSince(Clock::time_point t0);
using holdfast::bench::Median;                                        // NaN when empty
[[noreturn]] void Fail(const std::string& what);                      // throws std::runtime_error
std::string Errno(const std::string& what, const std::string& path);  // "what path: strerror"

// Busy CPU seconds of the whole machine (user, nice, system, irq, softirq,
// steal from /proc/stat) and of this process (all its threads).
struct CpuSample {
  double machine_busy = -1, self = 0;
  Clock::time_point wall = Clock::now();
};
CpuSample SampleCpu();

struct Flags {
  std::vector<std::string> modes = {"io", "stall"};
  std::vector<double> sizes_mb = {10, 1000};
  int repeats = 6;
  double settle_seconds = 3;
  double gather_piece_mb = 16;  // RestoreOptions::gather_piece_bytes, in MiB
  std::string dir;              // parent of the scratch directory; "": beside the executable
  std::string json_path;
  // stall
  std::string data = holdfast::kFashionMnistDir;
  bool synthetic = false;
  std::vector<int> hidden = {2048, 2048, 2048};
  int64_t batch = 256;
  float dropout = 0.2f;
  int64_t steps = 60;
  int64_t save_freq = 10;
  bool save_freq_auto = false;  // BackupAndRestore's kSaveFreqAuto instead
  double overhead_budget = 0.035;
  int stall_repeats = 3;
  int threads = 0;
  bool async_checkpoint = false;
  bool quick = false;
  bool quiet = false;
};

// What every mode measures through. Every collective below is issued by
// every rank in the same order. The chief makes a fresh scratch directory
// at construction (every rank learns its name; std::invalid_argument when it
// cannot) and removes it at destruction.
class Harness {
 public:
  Harness(const Flags& flags, holdfast::Communicator& comm);
  ~Harness();
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  const Flags& flags() const { return f_; }
  holdfast::Communicator& comm() const { return comm_; }
  bool chief() const { return chief_; }
  int world() const { return world_; }
  const std::string& scratch() const { return scratch_; }

  // A progress line on the chief's stderr, unless --quiet.
  void Log(const std::string& line) const;

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
  json GatherJson(const json& mine);

  // The share of all CPUs that other processes (and kernel threads, such as
  // the file system's writeback) used since `since`: machine busy time minus
  // this job's, over wall time x CPUs. Collective. -1 when unknown (ranks on
  // several hosts, or no /proc/stat).
  double ForeignCpuShare(const CpuSample& since);

  // Removes a repeat's directory under the scratch directory and lets the
  // file system settle the removal before the next timed write. Collective.
  void RemoveRepeatDir(const std::string& dir);

  // The scratch directory's file system and mount, for the record.
  json FilesystemInfo() const;

 private:
  const Flags& f_;
  holdfast::Communicator& comm_;
  const bool chief_;
  const int world_;
  const bool single_host_;
  std::string scratch_;
};

std::string LoadAverage();  // /proc/loadavg's line

}  // namespace checkpoint_bench

#endif  // HOLDFAST_BENCH_CHECKPOINT_HARNESS_H_
