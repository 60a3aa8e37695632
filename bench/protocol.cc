// bench/protocol: the checkpoint protocol at scale (issue 18). What one
// commit (CheckpointManager::Save) and one restore (RestoreLatest) cost each
// rank, counted rather than timed, on W in-process ranks (threads) for W up
// to 64, and how each count grows with W.
//
//   build/bench/protocol [--worlds 1,2,4,8,16,32,64] [--state-mb 8] [--json FILE]
//
// For each W: every rank builds the same training state (a model, Adam's
// two slots, an EMA of the weights, a replicated user object and a scalar,
// counters and values), saves it synchronously into a fresh directory, and
// then W fresh ranks restore it and check, bit for bit, that each got the
// whole state. Every file-system call goes through a counting Env and every
// collective through a counting Communicator (bench/protocol_counting.h):
// per rank, bytes written and read, files opened, fsyncs, collectives by
// kind and the bytes they move, and the chief's own work (the bytes it
// receives in Gather, the manifest's size, its thread's CPU time).
//
// What the design promises (docs/parallel-restore.md): a rank reads about
// state/W at restore (an all-gather then gives every rank the whole
// replicated state); the number of collectives per rank does not grow with
// W; the chief's work grows no faster than the number of shards (W) plus the
// state's checksum-chunk digests (state / 64 KiB x 8 bytes). The table ends
// with one line per quantity: how it grows and whether that is as designed.
//
// Counts, not times, so the numbers do not depend on the machine or on what
// else runs; the CPU times do (and in-process ranks share the cores).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench/median.h"
#include "bench/protocol_counting.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/manager.h"
#include "checkpoint/names.h"
#include "core/exit_codes.h"
#include "core/layers.h"
#include "core/optimizer.h"
#include "core/sequential.h"
#include "core/version.h"
#include "examples/cli.h"

namespace {

namespace fs = std::filesystem;
using holdfast::bench::Collective;
using holdfast::bench::CountedRun;
using holdfast::bench::CountingEnv;
using holdfast::bench::IoCounts;
using holdfast::bench::Median;
using holdfast::bench::RankCounts;
using nlohmann::json;

constexpr uint64_t kChunk = holdfast::internal::kChecksumChunkBytes;

// ------------------------------------------------------------------ the state

// A training loop's position: the state's replicated user object (the
// chief's copy is saved, as a small slice with its own digest).
struct LoopPosition {
  int64_t epoch = 0, batch = 0;
  double loss_sum = 0;
  std::string data_order;
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& epoch& batch& loss_sum& data_order;
  }
  bool operator==(const LoopPosition&) const = default;
};

// Per-rank state (--per-rank-state): a sampler's position, one per rank.
struct SamplerPosition {
  int64_t rank = -1, cursor = 0;
  std::vector<uint32_t> seen;
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& rank& cursor& seen;
  }
  bool operator==(const SamplerPosition&) const = default;
};

// Distinct, reproducible bit patterns for every word of every blob (any
// float a misplaced byte would change), or zeros for a blank state.
void Fill(std::span<float> v, uint64_t seed, uint64_t salt) {
  for (size_t i = 0; i < v.size(); ++i) {
    if (seed == 0) {
      v[i] = 0;
      continue;
    }
    uint64_t z = (seed << 48) ^ (salt << 40) ^ i;  // splitmix64
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    v[i] = static_cast<float>(static_cast<int64_t>(z >> 40) - (int64_t{1} << 23)) * 0x1.0p-23f;
  }
}

bool SameBits(std::span<const float> a, std::span<const float> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size_bytes()) == 0;
}

// What a training loop checkpoints, about `bytes` bytes of it in four float
// arrays of P words each (16 P bytes): the parameters of Dense(P / 2) on one
// input, Adam's m and v, and an EMA of the parameters. Seed 0: blank, what
// a fresh process restores into. Not copyable (the Checkpoint points into it).
class BenchState {
 public:
  BenchState(uint64_t bytes, uint64_t seed, int rank, bool per_rank) : model_(1) {
    const int units = static_cast<int>(std::max<uint64_t>(8, bytes / 32));
    model_.Add<holdfast::Dense>(units);
    model_.Build(7);
    adam_.Build(model_.store().size());
    Fill(model_.store().params(), seed, 1);
    uint64_t salt = 2;
    for (holdfast::OptimizerSlot& slot : adam_.slots()) Fill(slot.values, seed, salt++);
    ema_.resize(model_.store().params().size());
    Fill(ema_, seed, salt++);
    if (seed != 0) {
      adam_.set_iterations(static_cast<int64_t>(1000 * seed));
      loop_ = {static_cast<int64_t>(seed), 17, 0.1 * static_cast<double>(seed),
               "epoch-permutation-" + std::to_string(seed)};
      best_loss_ = 1.0 / static_cast<double>(seed + 2);
      if (per_rank) {
        sampler_ = {
            rank, static_cast<int64_t>(seed) * 100 + rank, {static_cast<uint32_t>(rank), 3, 5}};
      }
    }
    checkpoint_ = std::make_unique<holdfast::Checkpoint>(&model_, &adam_);
    checkpoint_->Track("ema", std::span<float>(ema_));
    checkpoint_->Track("loop", &loop_);
    checkpoint_->Track("best_loss", &best_loss_);
    if (per_rank) checkpoint_->TrackPerRank("sampler", &sampler_);
    if (seed != 0) {
      checkpoint_->counters["epoch"] = static_cast<int64_t>(seed);
      checkpoint_->values["lr"] = 1e-3 / static_cast<double>(seed);
    }
  }
  BenchState(const BenchState&) = delete;
  BenchState& operator=(const BenchState&) = delete;

  holdfast::Checkpoint& checkpoint() { return *checkpoint_; }
  int64_t step() const { return adam_.iterations(); }

  // Every tracked byte, the step, counters and values equal `o`'s (an
  // untracked sampler stays as built, the same in both).
  bool SameAs(BenchState& o) {
    std::vector<holdfast::OptimizerSlot> mine = adam_.slots(), theirs = o.adam_.slots();
    bool same = SameBits(std::as_const(model_).store().params(),
                         std::as_const(o.model_).store().params()) &&
                SameBits(ema_, o.ema_) && mine.size() == theirs.size() && loop_ == o.loop_ &&
                sampler_ == o.sampler_ &&
                std::memcmp(&best_loss_, &o.best_loss_, sizeof best_loss_) == 0 &&
                step() == o.step() && checkpoint_->counters == o.checkpoint_->counters &&
                checkpoint_->values == o.checkpoint_->values;
    for (size_t i = 0; same && i < mine.size(); ++i)
      same = SameBits(mine[i].values, theirs[i].values);
    return same;
  }

  // The bytes of every blob the checkpoint holds.
  uint64_t BlobBytes() {
    (void)checkpoint_->Capture(0);  // sizes the user objects' blobs
    uint64_t n = 0;
    for (const holdfast::NamedBlob& b : checkpoint_->Blobs()) n += b.bytes.size();
    return n;
  }

 private:
  holdfast::Sequential model_;
  holdfast::Adam adam_;
  std::vector<float> ema_;
  LoopPosition loop_;
  double best_loss_ = 0;
  SamplerPosition sampler_;
  std::unique_ptr<holdfast::Checkpoint> checkpoint_;
};

// ------------------------------------------------------------------ summaries

[[noreturn]] void Fail(const std::string& what) { throw std::runtime_error(what); }

std::string Bytes(double n) {
  char buf[32];
  if (n >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2f MB", n / 1e6);
  } else if (n >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1f kB", n / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f B", n);
  }
  return buf;
}

json IoJson(const IoCounts& c) {
  return {{"bytes_written", c.bytes_written},
          {"bytes_read", c.bytes_read},
          {"files_created", c.files_created},
          {"files_read", c.files_read},
          {"locks", c.locks},
          {"files_opened", c.files_opened()},
          {"file_syncs", c.file_syncs},
          {"dir_syncs", c.dir_syncs},
          {"fsyncs", c.fsyncs()},
          {"metadata_ops", c.metadata_ops}};
}

json RankJson(int rank, const RankCounts& r) {
  json kinds = json::object();
  for (Collective kind : holdfast::bench::kCollectives) {
    const holdfast::bench::CollectiveCounts& c = r.of(kind);
    kinds[holdfast::bench::CollectiveName(kind)] = {
        {"calls", c.calls}, {"bytes_sent", c.bytes_sent}, {"bytes_received", c.bytes_received}};
  }
  return {{"rank", rank},
          {"io", IoJson(r.io)},
          {"collectives", kinds},
          {"collective_calls", r.collective_calls},
          {"collective_bytes", r.collective_bytes},
          {"cpu_seconds", r.cpu_seconds},
          {"cpu_seconds_in_collectives", r.cpu_seconds_in_collectives}};
}

// One phase (save or restore) at one W, reduced to what the table shows.
// The chief's I/O includes the calls its helper threads made (SaveSync runs
// the chief's manifest and directory fsyncs on threads of their own; no
// other rank starts any in a synchronous save).
struct Phase {
  IoCounts chief_io;
  uint64_t max_written = 0, max_written_others = 0, max_read = 0, max_read_others = 0,
           total_read = 0;
  int64_t max_opened = 0, max_fsyncs = 0, chief_metadata = 0, max_metadata_others = 0;
  int64_t min_calls = 0, max_calls = 0;
  uint64_t max_coll_bytes_others = 0, max_broadcast_received_others = 0, max_allgather_received = 0,
           chief_gather_received = 0;
  // CPU: medians over the repeats (the counts are the same in every one).
  std::vector<double> chief_cpu_ms_repeats, others_own_cpu_ms_repeats;
  double chief_cpu_ms = 0, chief_own_cpu_ms = 0, others_own_cpu_ms = 0, wall_ms = 0;
  std::string last_rank_by_kind;  // "broadcast 6 / 109 B, gather 2 / 355 B"
  json ranks = json::array();
  json helper_threads_io;
  json opened = json::object();  // the files the chief and the last rank opened

  Phase(const CountedRun& run, const std::vector<CountingEnv::Open>& opens, const fs::path& dir) {
    const int world = static_cast<int>(run.ranks.size());
    chief_io = run.ranks[0].io;
    chief_io += run.no_rank;
    min_calls = run.ranks[0].collective_calls;
    for (int r = 0; r < world; ++r) {
      const RankCounts& c = run.ranks[static_cast<size_t>(r)];
      const IoCounts& io = r == 0 ? chief_io : c.io;
      max_written = std::max(max_written, io.bytes_written);
      max_read = std::max(max_read, io.bytes_read);
      total_read += io.bytes_read;
      max_opened = std::max(max_opened, io.files_opened());
      max_fsyncs = std::max(max_fsyncs, io.fsyncs());
      min_calls = std::min(min_calls, c.collective_calls);
      max_calls = std::max(max_calls, c.collective_calls);
      max_allgather_received =
          std::max(max_allgather_received, c.of(Collective::kAllGather).bytes_received);
      // The other ranks: what every rank but the coordinator pays (at W = 1
      // the chief is all there is).
      if (r > 0 || world == 1) {
        max_written_others = std::max(max_written_others, io.bytes_written);
        max_read_others = std::max(max_read_others, io.bytes_read);
        max_metadata_others = std::max(max_metadata_others, io.metadata_ops);
        max_coll_bytes_others = std::max(max_coll_bytes_others, c.collective_bytes);
        max_broadcast_received_others =
            std::max(max_broadcast_received_others, c.of(Collective::kBroadcast).bytes_received);
      }
      ranks.push_back(RankJson(r, c));
    }
    for (Collective kind : holdfast::bench::kCollectives) {
      const holdfast::bench::CollectiveCounts& c = run.ranks.back().of(kind);
      if (c.calls == 0) continue;
      if (!last_rank_by_kind.empty()) last_rank_by_kind += ", ";
      last_rank_by_kind += std::string(holdfast::bench::CollectiveName(kind)) + " " +
                           std::to_string(c.calls) + " / " +
                           Bytes(static_cast<double>(c.bytes_sent + c.bytes_received));
    }
    chief_metadata = chief_io.metadata_ops;
    chief_gather_received = run.ranks[0].of(Collective::kGather).bytes_received;
    wall_ms = run.wall_seconds * 1e3;
    helper_threads_io = IoJson(run.no_rank);
    for (const CountingEnv::Open& o : opens) {
      if (o.rank != 0 && o.rank != world - 1 && o.rank != holdfast::bench::kNoRank) continue;
      const std::string who =
          o.rank == holdfast::bench::kNoRank ? "helper threads" : "rank " + std::to_string(o.rank);
      opened[who].push_back(o.kind + " " + fs::path(o.path).lexically_relative(dir).string());
    }
    AddCpu(run);
  }

  // The CPU times of a repeat of the same phase.
  void AddCpu(const CountedRun& run) {
    const RankCounts& chief = run.ranks[0];
    chief_cpu_ms_repeats.push_back(chief.cpu_seconds * 1e3);
    std::vector<double> others;
    for (size_t r = 1; r < run.ranks.size(); ++r) {
      others.push_back((run.ranks[r].cpu_seconds - run.ranks[r].cpu_seconds_in_collectives) * 1e3);
    }
    own_ms_.push_back((chief.cpu_seconds - chief.cpu_seconds_in_collectives) * 1e3);
    if (others.empty()) others.push_back(own_ms_.back());  // W = 1: the chief is all there is
    others_own_cpu_ms_repeats.push_back(Median(others));
    chief_cpu_ms = Median(chief_cpu_ms_repeats);
    chief_own_cpu_ms = Median(own_ms_);
    others_own_cpu_ms = Median(others_own_cpu_ms_repeats);
  }

  json Json() const {
    return {{"summary",
             {{"max_bytes_written_per_rank", max_written},
              {"max_bytes_written_per_rank_but_chief", max_written_others},
              {"max_bytes_read_per_rank", max_read},
              {"max_bytes_read_per_rank_but_chief", max_read_others},
              {"total_bytes_read", total_read},
              {"max_files_opened_per_rank", max_opened},
              {"max_fsyncs_per_rank", max_fsyncs},
              {"chief_metadata_ops", chief_metadata},
              {"max_metadata_ops_per_rank_but_chief", max_metadata_others},
              {"min_collectives_per_rank", min_calls},
              {"max_collectives_per_rank", max_calls},
              {"max_collective_bytes_per_rank_but_chief", max_coll_bytes_others},
              {"max_broadcast_bytes_received_per_rank_but_chief", max_broadcast_received_others},
              {"max_allgather_bytes_received_per_rank", max_allgather_received},
              {"chief_gather_bytes_received", chief_gather_received},
              {"chief_io", IoJson(chief_io)},
              {"chief_cpu_ms", chief_cpu_ms},
              {"chief_cpu_ms_repeats", chief_cpu_ms_repeats},
              {"chief_cpu_outside_collectives_ms", chief_own_cpu_ms},
              {"median_rank_but_chief_cpu_outside_collectives_ms", others_own_cpu_ms},
              {"wall_ms_first_repeat", wall_ms}}},
            {"files_opened", opened},
            {"helper_threads_io", helper_threads_io},
            {"ranks_first_repeat", ranks}};
  }

 private:
  std::vector<double> own_ms_;
};

struct Row {
  int world = 0;
  uint64_t state_bytes = 0, manifest_bytes = 0, shard_bytes = 0;
  Phase save, restore;
};

// ------------------------------------------------------------------ one W

struct Config {
  uint64_t state_bytes = 0;
  bool per_rank = false;
  int repeats = 3;
};

// One save and one restore at `world` ranks in a fresh `dir` (removed
// after), counted; fails unless every rank restored the state bit for bit.
struct Measurement {
  CountedRun save, restore;
  std::vector<CountingEnv::Open> save_opens, restore_opens;
  uint64_t manifest_bytes = 0, shard_bytes = 0;
};

Measurement MeasureOnce(const Config& config, int world, const fs::path& dir) {
  fs::create_directories(dir);
  CountingEnv env;
  holdfast::CheckpointOptions options;
  options.directory = dir.string();
  options.max_to_keep = 1;
  options.env = &env;
  Measurement m;

  // Save: W ranks, each with the whole state, commit one checkpoint.
  std::vector<holdfast::Status> saved(static_cast<size_t>(world), holdfast::Status::Ok());
  m.save = holdfast::bench::RunCounted(
      world, env,
      [&](holdfast::Communicator& comm) {
        return std::make_unique<BenchState>(config.state_bytes, 1, comm.rank(), config.per_rank);
      },
      [&](holdfast::Communicator& comm, std::unique_ptr<BenchState>& state) {
        holdfast::CheckpointManager manager(&state->checkpoint(), &comm, options);
        saved[static_cast<size_t>(comm.rank())] = manager.Save();
      });
  m.save_opens = env.opens();
  for (int r = 0; r < world; ++r) {
    if (!saved[static_cast<size_t>(r)].ok()) {
      Fail("W=" + std::to_string(world) + ": rank " + std::to_string(r) +
           " could not save: " + saved[static_cast<size_t>(r)].ToString());
    }
  }

  // Restore: W fresh ranks read it back; each keeps its state for the check.
  std::vector<std::unique_ptr<BenchState>> states(static_cast<size_t>(world));
  std::vector<std::string> errors(static_cast<size_t>(world));
  m.restore = holdfast::bench::RunCounted(
      world, env,
      [&](holdfast::Communicator& comm) {
        auto& mine = states[static_cast<size_t>(comm.rank())];
        mine = std::make_unique<BenchState>(config.state_bytes, 0, comm.rank(), config.per_rank);
        return mine.get();
      },
      [&](holdfast::Communicator& comm, BenchState* state) {
        holdfast::CheckpointManager manager(&state->checkpoint(), &comm, options);
        auto restored = manager.RestoreLatest();
        std::string& error = errors[static_cast<size_t>(comm.rank())];
        if (!restored.ok()) {
          error = restored.status().ToString();
        } else if (!restored->has_value()) {
          error = "found no checkpoint";
        }
      });
  m.restore_opens = env.opens();
  std::unique_ptr<BenchState> expected;
  for (int r = 0; r < world; ++r) {
    const std::string where = "W=" + std::to_string(world) + ": rank " + std::to_string(r);
    if (!errors[static_cast<size_t>(r)].empty()) {
      Fail(where + " could not restore: " + errors[static_cast<size_t>(r)]);
    }
    // What rank r saved (the same on every rank but for its per-rank object).
    if (!expected || config.per_rank) {
      expected = std::make_unique<BenchState>(config.state_bytes, 1, r, config.per_rank);
    }
    if (!states[static_cast<size_t>(r)]->SameAs(*expected)) {
      Fail(where + " restored other bytes than were saved");
    }
    states[static_cast<size_t>(r)].reset();
  }

  const fs::path committed = dir / holdfast::CheckpointName(expected->step());
  m.manifest_bytes = fs::file_size(committed / holdfast::kManifestFile);
  for (const auto& e : fs::directory_iterator(committed)) {
    if (holdfast::IsShardFileName(e.path().filename().string())) m.shard_bytes += e.file_size();
  }
  fs::remove_all(dir);
  return m;
}

// `config.repeats` measurements at `world` ranks: the counts of the first
// (every repeat makes the same calls), the CPU times' medians.
Row MeasureOneWorld(const Config& config, int world, const fs::path& dir) {
  const Measurement first = MeasureOnce(config, world, dir);
  Row row{world,
          config.state_bytes,
          first.manifest_bytes,
          first.shard_bytes,
          Phase(first.save, first.save_opens, dir),
          Phase(first.restore, first.restore_opens, dir)};
  for (int i = 1; i < config.repeats; ++i) {
    const Measurement again = MeasureOnce(config, world, dir);
    row.save.AddCpu(again.save);
    row.restore.AddCpu(again.restore);
  }
  return row;
}

// ------------------------------------------------------------------ growth

// How a quantity grows with W: its local exponent between the two largest
// worlds (log-log slope), where any constant term matters least.
struct Growth {
  std::string phase, quantity, expected;
  std::vector<double> values;  // by world
  double exponent = NAN;
  bool as_expected = true;
  std::string verdict;
};

std::string Describe(double e) {
  char buf[48];
  if (std::isnan(e)) return "n/a";
  if (e <= -0.75) {
    std::snprintf(buf, sizeof buf, "falls ~1/W (W^%.2f)", e);
  } else if (e < -0.15) {
    std::snprintf(buf, sizeof buf, "falls slower than 1/W (W^%.2f)", e);
  } else if (e <= 0.15) {
    std::snprintf(buf, sizeof buf, "flat (W^%.2f)", e);
  } else if (e < 0.75) {
    std::snprintf(buf, sizeof buf, "grows sublinearly (W^%.2f)", e);
  } else if (e <= 1.25) {
    std::snprintf(buf, sizeof buf, "grows ~W (W^%.2f)", e);
  } else {
    std::snprintf(buf, sizeof buf, "grows faster than W (W^%.2f)", e);
  }
  return buf;
}

// What the design says of a quantity. kAtMostLinear allows a count of the
// other ranks (W - 1) too, which doubles faster than W at small W, and
// `slack` on top (CPU times are noisy: ms on shared cores).
enum class Expect { kFalls, kFlat, kAtMostLinear, kNone };

Growth MakeGrowth(const std::vector<int>& worlds, const std::string& phase,
                  const std::string& quantity, Expect expect, const std::string& expected,
                  std::vector<double> values, double slack = 1.1) {
  Growth g;
  g.phase = phase;
  g.quantity = quantity;
  g.expected = expected;
  g.values = std::move(values);
  const size_t n = worlds.size();
  if (n < 2 || worlds[n - 1] == worlds[n - 2]) {
    g.verdict = "n/a (one world)";
    return g;
  }
  const double w1 = worlds[n - 2], w2 = worlds[n - 1], v1 = g.values[n - 2], v2 = g.values[n - 1];
  if (v1 > 0 && v2 > 0) g.exponent = std::log(v2 / v1) / std::log(w2 / w1);
  g.verdict = Describe(g.exponent);
  switch (expect) {
    case Expect::kFalls:
      g.as_expected = v2 <= v1 * std::pow(w1 / w2, 0.75);
      break;
    case Expect::kFlat:
      g.as_expected = v2 <= v1 * 1.1 && v2 >= v1 / 1.1;
      break;
    case Expect::kAtMostLinear: {
      const double allowed = w1 > 1 ? std::max(w2 / w1, (w2 - 1) / (w1 - 1)) : w2 / w1;
      g.as_expected = v2 <= v1 * allowed * slack;
      break;
    }
    case Expect::kNone:
      break;
  }
  return g;
}

std::vector<Growth> Growths(const std::vector<int>& worlds, const std::vector<Row>& rows) {
  auto of = [&](auto get) {
    std::vector<double> v;
    for (const Row& r : rows) v.push_back(static_cast<double>(get(r)));
    return v;
  };
  using E = Expect;
  const double cpu_slack = 1.5;
  return {
      MakeGrowth(worlds, "save", "bytes written per rank (max)", E::kNone,
                 "state/W; the chief + manifest",
                 of([](const Row& r) { return r.save.max_written; })),
      MakeGrowth(worlds, "save", "bytes written per rank but the chief (max)", E::kFalls,
                 "~state/W", of([](const Row& r) { return r.save.max_written_others; })),
      MakeGrowth(worlds, "save", "files opened per rank (max)", E::kFlat, "flat",
                 of([](const Row& r) { return r.save.max_opened; })),
      MakeGrowth(worlds, "save", "fsyncs per rank (max)", E::kFlat, "flat",
                 of([](const Row& r) { return r.save.max_fsyncs; })),
      MakeGrowth(worlds, "save", "collectives per rank (max)", E::kFlat, "flat",
                 of([](const Row& r) { return r.save.max_calls; })),
      MakeGrowth(worlds, "save", "collective bytes per rank but the chief (max)", E::kFlat, "flat",
                 of([](const Row& r) { return r.save.max_coll_bytes_others; })),
      MakeGrowth(worlds, "save", "metadata ops per rank but the chief (max)", E::kNone, "flat",
                 of([](const Row& r) { return r.save.max_metadata_others; })),
      MakeGrowth(worlds, "save", "CPU per rank but the chief (median, own)", E::kNone,
                 "~state/W + const", of([](const Row& r) { return r.save.others_own_cpu_ms; })),
      MakeGrowth(worlds, "save", "chief: Gather bytes received", E::kAtMostLinear, "<= ~W",
                 of([](const Row& r) { return r.save.chief_gather_received; })),
      MakeGrowth(worlds, "save", "chief: MANIFEST.json bytes", E::kAtMostLinear, "<= ~W",
                 of([](const Row& r) { return r.manifest_bytes; })),
      MakeGrowth(worlds, "save", "chief: metadata ops", E::kAtMostLinear, "<= ~W",
                 of([](const Row& r) { return r.save.chief_metadata; })),
      MakeGrowth(worlds, "save", "chief: thread CPU", E::kAtMostLinear, "<= ~W",
                 of([](const Row& r) { return r.save.chief_cpu_ms; }), cpu_slack),
      MakeGrowth(worlds, "restore", "bytes read per rank (max)", E::kNone,
                 "state/W; the chief + manifest",
                 of([](const Row& r) { return r.restore.max_read; })),
      MakeGrowth(worlds, "restore", "bytes read per rank but the chief (max)", E::kFalls,
                 "~state/W", of([](const Row& r) { return r.restore.max_read_others; })),
      MakeGrowth(worlds, "restore", "bytes read, all ranks", E::kFlat, "flat (each byte once)",
                 of([](const Row& r) { return r.restore.total_read; })),
      MakeGrowth(worlds, "restore", "files opened per rank (max)", E::kFlat, "flat",
                 of([](const Row& r) { return r.restore.max_opened; })),
      MakeGrowth(worlds, "restore", "collectives per rank (max)", E::kFlat, "flat",
                 of([](const Row& r) { return r.restore.max_calls; })),
      MakeGrowth(worlds, "restore", "all-gather bytes received per rank (max)", E::kNone,
                 "state - state/W",
                 of([](const Row& r) { return r.restore.max_allgather_received; })),
      MakeGrowth(worlds, "restore", "broadcast bytes received per rank but the chief (max)",
                 E::kNone, "the manifest: ~W",
                 of([](const Row& r) { return r.restore.max_broadcast_received_others; })),
      MakeGrowth(worlds, "restore", "metadata ops per rank but the chief (max)", E::kFlat, "flat",
                 of([](const Row& r) { return r.restore.max_metadata_others; })),
      MakeGrowth(worlds, "restore", "CPU per rank but the chief (median, own)", E::kNone,
                 "~state/W + manifest",
                 of([](const Row& r) { return r.restore.others_own_cpu_ms; })),
      MakeGrowth(worlds, "restore", "chief: Gather bytes received", E::kAtMostLinear,
                 "<= ~W + digests",
                 of([](const Row& r) { return r.restore.chief_gather_received; })),
      MakeGrowth(worlds, "restore", "chief: thread CPU", E::kAtMostLinear, "<= ~W + digests",
                 of([](const Row& r) { return r.restore.chief_cpu_ms; }), cpu_slack),
      MakeGrowth(worlds, "restore", "chief: thread CPU outside collectives", E::kAtMostLinear,
                 "<= ~W + digests", of([](const Row& r) { return r.restore.chief_own_cpu_ms; }),
                 cpu_slack),
  };
}

// ------------------------------------------------------------------ output

void PrintTable(const Config& config, const std::vector<int>& worlds, const std::vector<Row>& rows,
                const std::vector<Growth>& growths) {
  std::printf(
      "protocol at scale: state %s (%s), synchronous Save then RestoreLatest on W in-process "
      "ranks\n",
      Bytes(static_cast<double>(config.state_bytes)).c_str(),
      config.per_rank ? "params, Adam m and v, EMA; user object, scalar; per-rank object"
                      : "params, Adam m and v, EMA; user object, scalar");
  std::printf(
      "per rank: max over ranks; coll = collective calls; coll B = collective bytes sent + "
      "received by a rank other than the chief; @0 = the chief (rank 0)\n\n");
  std::printf("%4s | %-62s | %s\n", "", "save", "restore");
  std::printf("%4s | %9s %4s %5s %4s %9s %9s %9s %8s | %9s %9s %4s %4s %9s %9s %8s\n", "W",
              "written", "open", "fsync", "coll", "coll B", "gather@0", "manifest", "cpu@0 ms",
              "read", "state/W", "open", "coll", "coll B", "gather@0", "cpu@0 ms");
  for (const Row& r : rows) {
    const Phase& s = r.save;
    const Phase& t = r.restore;
    auto calls = [](const Phase& p) {
      return p.min_calls == p.max_calls
                 ? std::to_string(p.max_calls)
                 : std::to_string(p.min_calls) + "-" + std::to_string(p.max_calls);
    };
    std::printf("%4d | %9s %4lld %5lld %4s %9s %9s %9s %8.1f | %9s %9s %4lld %4s %9s %9s %8.1f\n",
                r.world, Bytes(static_cast<double>(s.max_written)).c_str(),
                static_cast<long long>(s.max_opened), static_cast<long long>(s.max_fsyncs),
                calls(s).c_str(), Bytes(static_cast<double>(s.max_coll_bytes_others)).c_str(),
                Bytes(static_cast<double>(s.chief_gather_received)).c_str(),
                Bytes(static_cast<double>(r.manifest_bytes)).c_str(), s.chief_cpu_ms,
                Bytes(static_cast<double>(t.max_read)).c_str(),
                Bytes(static_cast<double>(r.state_bytes) / r.world).c_str(),
                static_cast<long long>(t.max_opened), calls(t).c_str(),
                Bytes(static_cast<double>(t.max_coll_bytes_others)).c_str(),
                Bytes(static_cast<double>(t.chief_gather_received)).c_str(), t.chief_cpu_ms);
  }
  std::printf("\ncollectives of the last rank by kind (calls / bytes sent + received)\n");
  for (const Row& r : rows) {
    std::printf("%4d | save: %s | restore: %s\n", r.world, r.save.last_rank_by_kind.c_str(),
                r.restore.last_rank_by_kind.c_str());
  }
  const size_t n = worlds.size();
  std::printf("\nhow each grows with W (exponent: log-log slope from W=%d to W=%d)\n",
              worlds[n >= 2 ? n - 2 : 0], worlds[n - 1]);
  for (const Growth& g : growths) {
    const bool bytes = g.quantity.find("bytes") != std::string::npos;
    const bool ms = g.quantity.find("CPU") != std::string::npos;
    auto value = [&](double v) {
      char buf[32];
      if (bytes) return Bytes(v);
      std::snprintf(buf, sizeof buf, ms ? "%.1f ms" : "%.0f", v);
      return std::string(buf);
    };
    std::printf("  %-7s %-54s W=%d: %9s  W=%d: %9s  %-30s expected %-18s%s\n", g.phase.c_str(),
                g.quantity.c_str(), worlds.front(), value(g.values.front()).c_str(), worlds.back(),
                value(g.values.back()).c_str(), g.verdict.c_str(), g.expected.c_str(),
                g.as_expected ? "" : "  << NOT as designed");
  }
}

json ToJson(const Config& config, const std::vector<int>& worlds, const std::vector<Row>& rows,
            const std::vector<Growth>& growths, const std::string& scratch) {
  json out;
  out["benchmark"] = "protocol";
  out["holdfast_version"] = HOLDFAST_VERSION;
  out["state_bytes"] = config.state_bytes;
  out["per_rank_state"] = config.per_rank;
  out["repeats"] = config.repeats;
  out["worlds"] = worlds;
  out["scratch_dir"] = scratch;
  out["checksum_chunk_bytes"] = kChunk;
  out["definitions"] = {
      {"ranks",
       "in-process ranks (threads) over one counting Env; a file counts to the rank "
       "that opened it; the chief's helper threads (SaveSync's fsyncs of the manifest "
       "and the prepare area) count to the chief in 'summary', separately in "
       "'helper_threads_io'"},
      {"files_opened",
       "NewWritableFile (NewDirectWritableFile too) + NewRandomAccessFile + "
       "ReadFile + LockFile"},
      {"fsyncs", "WritableFile::Sync + Env::SyncDir"},
      {"collectives",
       "virtual Communicator calls; BroadcastString = 2 broadcasts, "
       "BroadcastStatus likewise, GatherStatus = 1 gather"},
      {"bytes_sent/bytes_received",
       "payload from this rank's view: AllReduce both ways; Broadcast sent by the root, "
       "received by the others; Gather: each sends its string, the root receives the others'; "
       "AllGather: own part sent, the others' received"},
      {"cpu_seconds",
       "CLOCK_THREAD_CPUTIME_ID of the rank's thread over the call (OpenMP held "
       "to one thread per rank)"},
      {"growth_exponent", "log-log slope between the two largest worlds"}};
  json results = json::array();
  for (const Row& r : rows) {
    results.push_back({{"world", r.world},
                       {"state_bytes", r.state_bytes},
                       {"state_bytes_per_rank", static_cast<double>(r.state_bytes) / r.world},
                       {"manifest_bytes", r.manifest_bytes},
                       {"shard_bytes", r.shard_bytes},
                       {"checksum_chunks", (r.shard_bytes + kChunk - 1) / kChunk},
                       {"save", r.save.Json()},
                       {"restore", r.restore.Json()}});
  }
  out["results"] = results;
  json growth = json::array();
  for (const Growth& g : growths) {
    growth.push_back({{"phase", g.phase},
                      {"quantity", g.quantity},
                      {"values", g.values},
                      {"exponent", std::isnan(g.exponent) ? json() : json(g.exponent)},
                      {"verdict", g.verdict},
                      {"expected", g.expected},
                      {"as_expected", g.as_expected}});
  }
  out["growth"] = growth;
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(
      "bench/protocol: what one checkpoint commit (Save) and one restore (RestoreLatest) cost "
      "each of W in-process ranks (bytes, files, fsyncs, collectives, the chief's work), and how "
      "it grows with W.\nExit codes: 0 done, 2 usage, 1 a failure (a rank restored other "
      "bytes).");
  std::vector<int> worlds = {1, 2, 4, 8, 16, 32, 64};
  double state_mb = 8;
  std::string dir, json_path;
  bool per_rank = false;
  int repeats = 3;
  app.add_option("--worlds", worlds, "World sizes, comma separated")
      ->delimiter(',')
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  app.add_option("--state-mb", state_mb, "State size in MB (1e6 bytes)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--repeats", repeats,
                 "Measurements per W; the CPU times are their medians (the counts are the same "
                 "in each)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--dir", dir,
                 "Parent of the scratch directory (default: beside this executable); it is "
                 "created fresh and removed at the end");
  app.add_option("--json", json_path, "Also write the JSON to FILE");
  app.add_flag("--per-rank-state", per_rank,
               "Also track a per-rank user object (Checkpoint::TrackPerRank)");
  app.set_version_flag("--version", std::string("holdfast ") + HOLDFAST_VERSION);
  if (const auto code = holdfast::examples::ParseCommandLine(app, "protocol", argc, argv))
    return *code;
  std::sort(worlds.begin(), worlds.end());
  worlds.erase(std::unique(worlds.begin(), worlds.end()), worlds.end());

  const Config config{static_cast<uint64_t>(state_mb * 1e6), per_rank, repeats};
  std::string scratch;
  try {
    std::string parent = dir.empty() ? fs::read_symlink("/proc/self/exe").parent_path().string()
                                     : fs::absolute(dir).string();
    std::string templ = (fs::path(parent) / "protocol-bench-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) {
      std::fprintf(stderr, "protocol: cannot create a scratch directory in %s: %s\n",
                   parent.c_str(), std::strerror(errno));
      return holdfast::kExitUsage;
    }
    scratch = templ;
    Config measured = config;
    {  // the state's exact size: what its blobs hold
      BenchState probe(config.state_bytes, 1, 0, per_rank);
      measured.state_bytes = probe.BlobBytes();
    }
    std::vector<Row> rows;
    for (int world : worlds) {
      std::fprintf(stderr, "protocol: W=%d\n", world);
      Row row = MeasureOneWorld(config, world, fs::path(scratch) / ("w" + std::to_string(world)));
      row.state_bytes = measured.state_bytes;
      rows.push_back(std::move(row));
    }
    fs::remove_all(scratch);
    const std::vector<Growth> growths = Growths(worlds, rows);
    PrintTable(measured, worlds, rows, growths);
    const json out = ToJson(measured, worlds, rows, growths, scratch);
    std::printf("\n%s\n", out.dump().c_str());
    if (!json_path.empty()) holdfast::examples::WriteJsonFile(json_path, out);
    return holdfast::kExitOk;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "protocol: %s\n", e.what());
    std::error_code ec;
    if (!scratch.empty()) fs::remove_all(scratch, ec);
    return holdfast::kExitFailure;
  }
}
