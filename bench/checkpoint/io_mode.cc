// bench/checkpoint's io mode: CheckpointManager::Save and RestoreLatest
// against raw sequential I/O of the same bytes (raw_io.h), in the same run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "bench/checkpoint/modes.h"
#include "bench/checkpoint/raw_io.h"
#include "bench/checkpoint/timing_env.h"
#include "checkpoint/manager.h"
#include "core/hash.h"
#include "core/layers.h"
#include "core/optimizer.h"
#include "core/sequential.h"

namespace checkpoint_bench {
namespace {

namespace fs = std::filesystem;

volatile uint64_t g_sink = 0;

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

class IoBench {
 public:
  explicit IoBench(Harness& h)
      : h_(h), f_(h.flags()), comm_(h.comm()), chief_(h.chief()), world_(h.world()) {}

  json Run() {
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
             "every rank reads its raw file back into the state; the mirrored reference then "
             "gives every rank the whole state with MPI_Allgatherv of each blob, as a mirrored "
             "restore must."},
            {"sizes", sizes}};
  }

 private:
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
    for (const holdfast::NamedBlob& b : ckpt.Blobs()) state_bytes += b.bytes.size();
    const std::vector<std::span<std::byte>> slices = MySlices(ckpt, comm_.rank(), world_);
    uint64_t my_bytes = 0;
    for (auto s : slices) my_bytes += s.size_bytes();
    const uint64_t hash = StateHash(ckpt);

    const int repeats = f_.repeats;
    std::vector<double> save, raw_w, restore_cold, raw_r_cold, restore_warm, raw_r_warm;
    // The all-gather that follows each raw read in the mirrored reference.
    std::vector<double> gather_cold, gather_warm;
    // Ratios raw time / holdfast time, by which of the two ran first.
    OrderedRatios r_save, r_restore_cold, r_restore_warm;
    OrderedRatios r_mirrored_cold, r_mirrored_warm;
    std::vector<double> resident, hash_s, copy_s;
    json save_breakdowns = json::array(), restore_breakdowns = json::array();
    json raw_split = json::array();
    const CpuSample cpu0 = SampleCpu();
    uint64_t checkpoint_bytes = 0;
    char label[64];
    std::snprintf(label, sizeof label, "%.0f MB", static_cast<double>(state_bytes) / 1e6);
    for (int r = 0; r < repeats + 1; ++r) {  // repeat 0 warms up, not recorded
      const bool record = r > 0;
      h_.Log(std::string("io ") + label + (record ? ", repeat " + std::to_string(r) : ", warm-up"));
      const std::string dir = (fs::path(h_.scratch()) / ("rep-" + std::to_string(r))).string();
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
        t_save = h_.Timed([&] {
          const holdfast::Status s = manager.Save();
          if (!s.ok()) Fail("save failed: " + s.ToString());
        });
      };
      auto do_raw = [&] {
        t_raw = h_.Timed([&] { split = RawWrite(comm_, raw_path, slices, dir); });
      };
      if (r % 2) {
        do_save();
        do_raw();
      } else {
        do_raw();
        do_save();
      }
      save_breakdowns.push_back(record ? h_.GatherJson(StatsJson(env)) : json());
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
        std::vector<std::span<std::byte>> all;
        for (const holdfast::NamedBlob& b : ckpt.Blobs()) all.push_back(b.bytes);
        Scribble(all);
        holdfast::CheckpointManager reader(&ckpt, &comm_, co);
        env.Reset();
        *t = h_.Timed([&] {
          auto restored = reader.RestoreLatest(
              {.gather_piece_bytes = static_cast<size_t>(f_.gather_piece_mb * (1 << 20))});
          if (!restored.ok()) Fail("restore failed: " + restored.status().ToString());
          if (!restored->has_value()) Fail("restore found no checkpoint in " + dir);
        });
        if (StateHash(ckpt) != hash) Fail("restored state differs from the saved one");
      };
      // The raw read, then (the mirrored reference) the raw collective that
      // gives every rank the whole state: MPI_Allgatherv of each blob.
      auto do_raw_read = [&](double* t, double* t_gather) {
        Scribble(slices);  // only this rank's slices: those it reads back
        *t = h_.Timed([&] { RawRead(raw_path, slices); });
        if (StateHash(ckpt) != hash) Fail("raw read gave other bytes than were written");
        std::vector<std::span<std::byte>> others;
        for (int k = 0; k < world_; ++k) {
          if (k != comm_.rank()) {
            for (std::span<std::byte> s : MySlices(ckpt, k, world_)) others.push_back(s);
          }
        }
        Scribble(others);  // what the all-gather must bring
        *t_gather = h_.Timed([&] {
          for (const holdfast::NamedBlob& b : ckpt.Blobs()) {
            const int64_t words = static_cast<int64_t>(b.bytes.size() / sizeof(float));
            std::vector<size_t> parts = {0};
            for (int k = 0; k < world_; ++k) {
              parts.push_back(static_cast<size_t>(holdfast::ReplicaSlice(words, k, world_).end) *
                              sizeof(float));
            }
            comm_.AllGather(b.bytes.data(), holdfast::Communicator::Consecutive(parts));
          }
        });
        if (StateHash(ckpt) != hash) Fail("the all-gather gave other bytes than were written");
      };
      double t_gc = 0, t_gw = 0;
      DropPageCache(dir);
      comm_.Barrier();
      double res = 0;
      if (chief_) {
        const auto [share, worst] = ResidentShare(dir);
        res = share;
        if (share > 0.01) h_.Log("pages still cached after the drop: " + worst);
      }
      comm_.Barrier();
      if (r % 2) {
        do_restore(&t_rc);
        restore_env = StatsJson(env);
        do_raw_read(&t_rawc, &t_gc);
        do_raw_read(&t_raww, &t_gw);
        do_restore(&t_rw);
      } else {
        do_raw_read(&t_rawc, &t_gc);
        do_restore(&t_rc);
        restore_env = StatsJson(env);
        do_restore(&t_rw);
        do_raw_read(&t_raww, &t_gw);
      }
      restore_breakdowns.push_back(record ? h_.GatherJson(restore_env) : json());
      // Calibrations, untimed against the others: XXH3 of this rank's bytes,
      // and one copy of them into freshly allocated memory (page faults
      // included), the unit cost of a serialisation copy.
      const auto th = Clock::now();
      uint64_t sink = 0;
      for (auto s : slices) sink ^= holdfast::Xxh3(s.data(), s.size());
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
      h_.RemoveRepeatDir(dir);
      if (!record) continue;
      raw_split.push_back(h_.GatherJson(
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
      r_mirrored_cold.Add(r % 2 == 1, (t_rawc + t_gc) / t_rc);
      r_mirrored_warm.Add(r % 2 == 1, (t_raww + t_gw) / t_rw);
      gather_cold.push_back(t_gc);
      gather_warm.push_back(t_gw);
      resident.push_back(res);
      hash_s.push_back(t_hash);
      copy_s.push_back(t_copy);
    }
    const double foreign = h_.ForeignCpuShare(cpu0);
    const double gb = static_cast<double>(state_bytes) / 1e9;
    json j = {{"target_mb", mb},
              {"foreign_cpu_share", foreign},
              {"state_bytes", state_bytes},
              {"checkpoint_bytes", checkpoint_bytes},
              {"bytes_per_rank", my_bytes},
              {"repeats", repeats},
              {"settle_seconds", f_.settle_seconds},
              {"gather_piece_mb", f_.gather_piece_mb},
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
              {"allgather_after_cold_read_seconds", gather_cold},
              {"allgather_after_warm_read_seconds", gather_warm},
              {"restore_cold_over_mirrored_raw", r_mirrored_cold.Combined()},
              {"restore_warm_over_mirrored_raw", r_mirrored_warm.Combined()},
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

  // Flips a bit of each span's first and last byte, so that a read that
  // does not overwrite all of them fails the hash check after it.
  static void Scribble(const std::vector<std::span<std::byte>>& spans) {
    for (std::span<std::byte> s : spans) {
      if (s.empty()) continue;
      s.front() ^= std::byte{1};
      s.back() ^= std::byte{1};
    }
  }

  uint64_t StateHash(holdfast::Checkpoint& c) {
    uint64_t h = 0;
    for (const holdfast::NamedBlob& b : c.Blobs()) {
      h = h * 1000003 ^ holdfast::Xxh3(b.bytes.data(), b.bytes.size());
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

  Harness& h_;
  const Flags& f_;
  holdfast::Communicator& comm_;
  const bool chief_;
  const int world_;
};

}  // namespace

json RunIo(Harness& harness) { return IoBench(harness).Run(); }

}  // namespace checkpoint_bench
