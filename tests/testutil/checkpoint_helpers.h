// Helpers shared by the checkpoint tests: trained models with distinct
// values in every blob, the whole training state as one flat vector, ways to
// damage files on disk, and saving / restoring whole states on in-process
// ranks.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "checkpoint/manager.h"
#include "core/fit.h"
#include "core/loss.h"
#include "distribute/communicator.h"
#include "distribute/thread_communicator.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast {

// Byte ranges [begin, end) read, by file.
using ReadRanges = std::map<std::string, std::vector<std::pair<uint64_t, uint64_t>>>;

// The files of `sizes` were read, none other, and each whole, each byte once:
// the ranges read of each file tile it exactly.
inline void ExpectEachByteReadOnce(ReadRanges reads, const std::map<std::string, uint64_t>& sizes) {
  std::vector<std::string> read_files, expected_files;
  for (const auto& [file, ranges] : reads) read_files.push_back(file);
  for (const auto& [file, size] : sizes) expected_files.push_back(file);
  EXPECT_EQ(read_files, expected_files);
  for (auto& [file, ranges] : reads) {
    SCOPED_TRACE(file);
    std::sort(ranges.begin(), ranges.end());
    uint64_t next = 0;
    for (const auto& [begin, end] : ranges) {
      EXPECT_EQ(begin, next) << "bytes read twice or not at all";
      next = std::max(next, end);
    }
    const auto size = sizes.find(file);
    if (size != sizes.end()) {
      EXPECT_EQ(next, size->second);
    }
  }
}

// A model trained for `steps` Adam steps, so every blob holds distinct values.
inline Trainee Trained(uint64_t seed, int steps) {
  Trainee t = MakeClassifier(seed);
  const Dataset data = MakeBlobs(64, 3);
  FitOptions o;
  o.epochs = 1;
  o.batch_size = 64 / steps;
  o.seed = seed;
  (void)Fit(*t.model, *t.optimizer, SoftmaxCrossEntropy(), data, o);
  return t;
}

// Parameters, then every optimizer slot, in one vector (compare with ==: bit
// equality for all finite values).
inline std::vector<float> Flat(Trainee& t) {
  std::vector<float> all(t.model->store().params().begin(), t.model->store().params().end());
  for (auto& slot : t.optimizer->slots())
    all.insert(all.end(), slot.values.begin(), slot.values.end());
  return all;
}

// Flips bit 5 of the byte at `offset` (which must exist).
inline void FlipByte(const std::filesystem::path& file, uint64_t offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x20));
  ASSERT_TRUE(f.good()) << "cannot flip byte " << offset << " of " << file;
}

inline void AppendBytes(const std::filesystem::path& file, std::string_view bytes) {
  std::ofstream f(file, std::ios::binary | std::ios::app);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(f.good()) << "cannot append to " << file;
}

// Copies a directory tree (a committed checkpoint directory, say) to `to`,
// which must not exist yet.
inline void CopyTree(const std::filesystem::path& from, const std::filesystem::path& to) {
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
}

// Names in `dir` that look like an interrupted save's prepare area.
inline std::vector<std::string> PrepareAreas(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(".ckpt-", 0) == 0 && name.find(".tmp-") != std::string::npos) {
      out.push_back(name);
    }
  }
  return out;
}

// A program's own object with a Boost.Serialization serialize(), tracked
// as "loader" (Checkpoint::Track of a user type).
struct LoaderState {
  int64_t epoch = 0;
  std::vector<int64_t> order;
  std::string source;
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& epoch& order& source;
  }
  bool operator==(const LoaderState&) const = default;
};

// A training state to save: a model trained for `steps` steps (seed = steps,
// so states differ everywhere), a counter naming it, an array the program
// tracks beside the model (Checkpoint::Track "ema", an average of the
// weights) and a user object ("loader"), so that the crash, damage and
// async sweeps cover tracked arrays and serialized objects too.
// StateA/B/C are at steps 4, 8 and 16.
struct State {
  int64_t step = 0;
  std::vector<float> flat;
  std::map<std::string, int64_t> counters;
  std::vector<float> ema;
  LoaderState loader;
};

inline State MakeState(int steps) {
  Trainee t = Trained(static_cast<uint64_t>(steps), steps);
  const std::span<const float> params = std::as_const(*t.model).store().params();
  std::vector<float> ema(params.begin(), params.end());
  for (float& v : ema) v = v * 0.5f + static_cast<float>(steps);
  LoaderState loader{steps / 4, {steps, 3, 1, steps * 2}, "shard-" + std::to_string(steps)};
  return {
      t.optimizer->iterations(), Flat(t), {{"saved_at", steps}}, std::move(ema), std::move(loader)};
}

inline const State& StateA() {
  static const State s = MakeState(4);
  return s;
}
inline const State& StateB() {
  static const State s = MakeState(8);
  return s;
}
inline const State& StateC() {
  static const State s = MakeState(16);
  return s;
}

// Loads `s` into a freshly built classifier.
inline void Load(const State& s, Trainee& t) {
  auto params = t.model->store().params();
  size_t i = 0;
  for (float& v : params) v = s.flat.at(i++);
  for (auto& slot : t.optimizer->slots()) {
    for (float& v : slot.values) v = s.flat.at(i++);
  }
  ASSERT_EQ(i, s.flat.size());
  t.optimizer->set_iterations(s.step);
}

// What one in-process rank saves: a freshly built classifier loaded with a
// State, and the Checkpoint of it carrying the State's counters and
// tracking its "ema".
struct LoadedState {
  explicit LoadedState(const State& s)
      : trainee(MakeClassifier(1)),
        checkpoint(trainee.model.get(), trainee.optimizer.get()),
        ema(s.ema),
        loader(s.loader) {
    Load(s, trainee);
    checkpoint.counters = s.counters;
    checkpoint.Track("ema", ema);
    checkpoint.Track("loader", &loader);
  }
  Trainee trainee;
  Checkpoint checkpoint;
  std::vector<float> ema;
  LoaderState loader;
};

// What a fresh process restores into: a classifier built with another seed
// and a zero "ema", tracked as LoadedState tracks it.
struct FreshState {
  FreshState()
      : trainee(MakeClassifier(99)),
        checkpoint(trainee.model.get(), trainee.optimizer.get()),
        ema(trainee.model->store().params().size(), 0.0f) {
    checkpoint.Track("ema", ema);
    checkpoint.Track("loader", &loader);
  }
  State Snapshot(int64_t step) {
    return State{step, Flat(trainee), checkpoint.counters, ema, loader};
  }
  Trainee trainee;
  Checkpoint checkpoint;
  std::vector<float> ema;
  LoaderState loader;
};

struct SaveSetup {
  int world = 1;
  bool chief_writes_all = false;
  int max_to_keep = 2;
  bool async = false;
};

// A Replica for in-process ranks without a model: Step() agrees on the
// control words over `comm` as the mirrored strategy's gradient all-reduce
// does (one collective per step), which is all asynchronous saves need.
class StepReplica final : public Replica {
 public:
  explicit StepReplica(Communicator& comm) : comm_(comm) {}
  int rank() const override { return comm_.rank(); }
  int world_size() const override { return comm_.size(); }
  void Step() {
    const StepControl local = TakeLocalControl();
    std::vector<double> words = {
        static_cast<double>(local.stop_requests), static_cast<double>(local.failures),
        static_cast<double>(local.checkpoint_busy), static_cast<double>(local.checkpoint_failed)};
    comm_.AllReduceSum(std::span<double>(words));
    const int64_t sequence = control_.sequence;
    control_ = {static_cast<int>(words[0]), static_cast<int>(words[1]), static_cast<int>(words[2]),
                static_cast<int>(words[3]), sequence + 1};
  }

 private:
  Communicator& comm_;
};

// Async: steps `replica` (every rank together) until the save in flight
// resolves, polling after each step as a training loop does; a bounded
// number of steps, then WaitForSave. Returns the first error seen;
// `resolved_at` (if given) gets the step sequence at which Poll resolved it.
inline Status StepUntilResolved(CheckpointManager& m, StepReplica& replica, Status status,
                                int64_t* resolved_at = nullptr) {
  for (int i = 0; i < 20000 && m.save_in_flight(); ++i) {
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    replica.Step();
    const Status polled = m.Poll();
    if (status.ok()) status = polled;
    if (!m.save_in_flight() && resolved_at != nullptr) *resolved_at = replica.control().sequence;
  }
  const Status waited = m.WaitForSave();
  return status.ok() ? waited : status;
}

// On `world` in-process ranks, every rank loads `s` and calls Save() once
// through `env` (async: and steps until it resolves); returns each rank's
// status.
inline std::vector<Status> SaveOnRanks(const SaveSetup& setup, const std::string& dir, Env* env,
                                       const State& s) {
  std::vector<Status> statuses(static_cast<size_t>(setup.world), InternalError("not run"));
  RunInProcessRanks(setup.world, [&](Communicator& comm) {
    LoadedState loaded(s);
    StepReplica replica(comm);
    CheckpointManager m(&loaded.checkpoint, &comm,
                        {.directory = dir,
                         .max_to_keep = setup.max_to_keep,
                         .chief_writes_all = setup.chief_writes_all,
                         .env = env,
                         .async = setup.async,
                         .replica = &replica});
    Status status = m.Save();
    if (setup.async) status = StepUntilResolved(m, replica, status);
    statuses[static_cast<size_t>(comm.rank())] = status;
  });
  return statuses;
}

// What a fresh process finds: RestoreLatest over the real Env with a fresh
// model. The state restored; no state (and OK) for a fresh start; the
// status for an error.
struct Restored {
  Status status;
  std::optional<State> state;
};

inline Restored RestoreFresh(const std::string& dir) {
  LocalCommunicator comm;
  FreshState fresh;
  CheckpointManager m(&fresh.checkpoint, &comm, {.directory = dir});
  auto r = m.RestoreLatest();
  if (!r.ok()) return {r.status(), std::nullopt};
  if (!r->has_value()) return {Status::Ok(), std::nullopt};
  return {Status::Ok(), fresh.Snapshot(**r)};
}

// RestoreFresh on `world` in-process ranks, each with its fresh state,
// reading through `env` (the real one if null): one result per rank.
inline std::vector<Restored> RestoreOnRanks(int world, const std::string& dir, Env* env = nullptr,
                                            const RestoreOptions& options = {}) {
  std::vector<Restored> out(static_cast<size_t>(world));
  RunInProcessRanks(world, [&](Communicator& comm) {
    FreshState fresh;
    CheckpointManager m(&fresh.checkpoint, &comm, {.directory = dir, .env = env});
    auto r = m.RestoreLatest(options);
    Restored& mine = out[static_cast<size_t>(comm.rank())];
    if (!r.ok()) {
      mine = {r.status(), std::nullopt};
    } else if (r->has_value()) {
      mine = {Status::Ok(), fresh.Snapshot(**r)};
    } else {
      mine = {Status::Ok(), std::nullopt};
    }
  });
  return out;
}

inline bool Same(const State& a, const State& b) {
  return a.step == b.step && a.flat == b.flat && a.counters == b.counters && a.ema == b.ema &&
         a.loader == b.loader;
}

// "old" or "new" for a restored state, "neither" for anything else.
inline std::string Which(const State& s, const State& old_state, const State& new_state) {
  if (Same(s, old_state)) return "old";
  if (Same(s, new_state)) return "new";
  return "neither (step " + std::to_string(s.step) + ")";
}

}  // namespace holdfast
