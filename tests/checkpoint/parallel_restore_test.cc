// The parallel restore (docs/parallel-restore.md): every rank reads its
// share of the shards, and damage to any rank's share makes every rank fall
// back to the same older checkpoint, at any world size the checkpoint was
// written or is read with; every shard byte is read once in all; the shares
// cut the shards as documented.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "checkpoint/internal/manifest.h"
#include "checkpoint/internal/parallel_read.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/fault_env.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;

std::string CkptName(const State& s) { return "ckpt-" + std::to_string(s.step); }
std::string Shard(int rank, int world) {
  return "shard-" + std::to_string(rank) + "-of-" + std::to_string(world) + ".bin";
}

// Every file read was read whole and each byte once, and exactly the
// `expected_files` were read (named relative to `dir`, as `name_of` gives it).
void ExpectEachByteReadOnce(const std::vector<testing::FaultInjectionEnv::Read>& reads,
                            const fs::path& dir,
                            const std::function<std::string(const fs::path&)>& name_of,
                            const std::vector<std::string>& expected_files) {
  ReadRanges by_file;
  for (const testing::FaultInjectionEnv::Read& read : reads) {
    by_file[name_of(read.path)].emplace_back(read.offset, read.offset + read.bytes);
  }
  std::map<std::string, uint64_t> sizes;
  for (const std::string& file : expected_files) sizes[file] = fs::file_size(dir / file);
  holdfast::ExpectEachByteReadOnce(std::move(by_file), sizes);
}

// Parameters: the world size that saved, the world size that restores.
class ParallelRestoreTest : public ::testing::TestWithParam<std::tuple<int, int>> {
 protected:
  static int Saved() { return std::get<0>(GetParam()); }
  static int Reading() { return std::get<1>(GetParam()); }

  // A pristine directory: A, then B, saved by Saved() ranks.
  void SetUp() override {
    pristine_ = fs::path(base_.path()) / "pristine";
    fs::create_directory(pristine_);
    for (const State* s : {&StateA(), &StateB()}) {
      for (const Status& st :
           SaveOnRanks({.world = Saved()}, pristine_.string(), Env::Default(), *s)) {
        ASSERT_OK(st);
      }
    }
  }

  fs::path Fresh() {
    const fs::path d = fs::path(base_.path()) / ("case-" + std::to_string(cases_++));
    CopyTree(pristine_, d);
    return d;
  }

  // Every rank restores OK, and all of them `expected` ("old" or "new").
  void ExpectEveryRankRestores(const fs::path& dir, const std::string& expected) {
    const std::vector<Restored> ranks = RestoreOnRanks(Reading(), dir.string());
    for (size_t r = 0; r < ranks.size(); ++r) {
      SCOPED_TRACE("rank " + std::to_string(r));
      ASSERT_OK(ranks[r].status);
      ASSERT_TRUE(ranks[r].state.has_value());
      EXPECT_EQ(Which(*ranks[r].state, StateA(), StateB()), expected);
    }
  }

  TempDir base_;
  fs::path pristine_;
  int cases_ = 0;
};

TEST_P(ParallelRestoreTest, AnIntactCheckpointComesBackOnEveryRank) {
  ExpectEveryRankRestores(pristine_, "new");
}

// Damage confined to one shard, for each shard in turn (so each reading
// rank's share is hit): every rank falls back to A together.
TEST_P(ParallelRestoreTest, DamageInAnyRanksShareFallsBackOnEveryRank) {
  struct Case {
    std::string name;
    std::function<void(const fs::path& shard, const fs::path& older)> apply;
  };
  const std::vector<Case> cases = {
      {"a flipped byte in its prefix", [](auto& f, auto&) { FlipByte(f, 60); }},
      {"a flipped byte in the middle", [](auto& f, auto&) { FlipByte(f, fs::file_size(f) / 2); }},
      {"a flipped last byte", [](auto& f, auto&) { FlipByte(f, fs::file_size(f) - 1); }},
      {"truncated", [](auto& f, auto&) { fs::resize_file(f, fs::file_size(f) / 2); }},
      {"missing", [](auto& f, auto&) { fs::remove(f); }},
      {"the older checkpoint's shard in its place",
       [](auto& f, auto& older) { fs::copy_file(older, f, fs::copy_options::overwrite_existing); }},
  };
  for (int s = 0; s < Saved(); ++s) {
    for (const Case& c : cases) {
      SCOPED_TRACE(Shard(s, Saved()) + ": " + c.name);
      const fs::path d = Fresh();
      c.apply(d / CkptName(StateB()) / Shard(s, Saved()),
              d / CkptName(StateA()) / Shard(s, Saved()));
      ExpectEveryRankRestores(d, "old");
      fs::remove_all(d);
    }
  }
}

// Both checkpoints damaged in a large array: DataLoss on every rank. Told to
// undo, every rank's live state is what it was before the restore.
TEST_P(ParallelRestoreTest, NoUsableCheckpointIsDataLossOnEveryRankAndUndoKeepsTheState) {
  const fs::path d = Fresh();
  for (const State* s : {&StateA(), &StateB()}) {
    const fs::path shard = d / CkptName(*s) / Shard(Saved() - 1, Saved());
    FlipByte(shard, fs::file_size(shard) - 5);  // in the last slice's words
  }
  for (const Restored& r : RestoreOnRanks(Reading(), d.string())) {
    EXPECT_EQ(r.status.code(), StatusCode::kDataLoss) << r.status.ToString();
  }
  const State before = FreshState().Snapshot(0);
  std::vector<State> after(static_cast<size_t>(Reading()));
  RunInProcessRanks(Reading(), [&](Communicator& comm) {
    FreshState fresh;
    CheckpointManager m(&fresh.checkpoint, &comm, {.directory = d.string()});
    auto r = m.RestoreLatest({.undo_on_failure = true});
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
    after[static_cast<size_t>(comm.rank())] = fresh.Snapshot(0);
  });
  for (const State& s : after) EXPECT_TRUE(Same(s, before));
}

// Every byte of every shard is read once in all, by one rank; the manifest
// once, by the chief. (A, the older checkpoint, is never touched.)
TEST_P(ParallelRestoreTest, EachShardByteIsReadOnceInAll) {
  testing::FaultInjectionEnv env;
  const std::vector<Restored> ranks = RestoreOnRanks(Reading(), pristine_.string(), &env);
  for (const Restored& r : ranks) ASSERT_OK(r.status);
  const std::string b = CkptName(StateB());
  std::vector<std::string> expected = {b + "/" + std::string(kManifestFile)};
  for (int s = 0; s < Saved(); ++s) expected.push_back(b + "/" + Shard(s, Saved()));
  ExpectEachByteReadOnce(
      env.reads(), pristine_,
      [&](const fs::path& p) { return p.lexically_relative(pristine_).string(); }, expected);
}

// The shares: every byte of every shard in exactly one rank's share, runs
// cut at checksum-chunk boundaries and never inside a shard's prefix; as
// many shards as ranks: rank r reads shard r; each rank's part of every
// blob contiguous and in rank order (BlobParts checks it and dies if not).
TEST_P(ParallelRestoreTest, SharesCoverEveryByteOnceAtChunkBoundaries) {
  auto c = ReadManifest(Env::Default(), (pristine_ / CkptName(StateB())).string());
  ASSERT_OK(c.status());
  ASSERT_TRUE(c->has_layout);
  for (int world : {1, 2, 3, 4, 7, 64}) {
    SCOPED_TRACE("world " + std::to_string(world));
    for (const bool chief : {false, true}) {
      const internal::Shares shares = internal::ShareOut(*c, world, chief);
      ASSERT_EQ(shares.size(), static_cast<size_t>(world));
      std::vector<std::vector<std::pair<uint64_t, uint64_t>>> covered(c->shards.size());
      for (size_t r = 0; r < shares.size(); ++r) {
        for (const internal::Extent& e : shares[r]) {
          if (chief) {
            EXPECT_EQ(r, 0u);
          }
          if (!chief && world == Saved()) {
            EXPECT_EQ(e.shard, r);
          }
          EXPECT_EQ(e.begin % internal::kChecksumChunkBytes, 0u);
          EXPECT_TRUE(e.end == c->shards[e.shard].bytes ||
                      e.end % internal::kChecksumChunkBytes == 0);
          const uint64_t prefix_end = c->shards[e.shard].slices.front().at;
          EXPECT_FALSE(e.begin > 0 && e.begin < prefix_end);
          covered[e.shard].emplace_back(e.begin, e.end);
        }
      }
      for (size_t s = 0; s < covered.size(); ++s) {
        std::sort(covered[s].begin(), covered[s].end());
        uint64_t next = 0;
        for (const auto& [begin, end] : covered[s]) {
          EXPECT_EQ(begin, next);
          next = end;
        }
        EXPECT_EQ(next, c->shards[s].bytes);
      }
      const std::set<std::string> small = internal::SmallBlobs(*c);
      for (const auto& [blob, words] : c->blob_floats) {
        if (small.contains(blob)) continue;  // read whole by one rank, then all-gathered
        const std::vector<size_t> parts = internal::BlobParts(*c, shares, blob);
        EXPECT_EQ(parts.back(), words * sizeof(float));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, ParallelRestoreTest,
                         ::testing::Combine(::testing::Values(1, 2, 3), ::testing::Values(1, 2, 3)),
                         [](const auto& info) {
                           return "Saved" + std::to_string(std::get<0>(info.param)) + "_Read" +
                                  std::to_string(std::get<1>(info.param));
                         });

// A state large enough that shards span many checksum chunks, so that the
// ranks' shares cut through slices: the classifier, a tracked array of
// 400 000 floats, a scalar and a user object.
struct BigState {
  explicit BigState(float seed)
      : trainee(MakeClassifier(static_cast<uint64_t>(seed) + 1)),
        checkpoint(trainee.model.get(), trainee.optimizer.get()),
        big(400'000) {
    for (size_t i = 0; i < big.size(); ++i) big[i] = seed + static_cast<float>(i) * 1e-3f;
    epoch = static_cast<int64_t>(seed);
    loader = {epoch, {1, 2, epoch}, "big"};
    checkpoint.Track("big", std::span<float>(big));
    checkpoint.Track("epoch", &epoch);
    checkpoint.Track("loader", &loader);
  }
  bool operator==(const BigState& o) const {
    return Flat(const_cast<Trainee&>(trainee)) == Flat(const_cast<Trainee&>(o.trainee)) &&
           big == o.big && epoch == o.epoch && loader == o.loader;
  }
  Trainee trainee;
  Checkpoint checkpoint;
  std::vector<float> big;
  int64_t epoch = 0;
  LoaderState loader;
};

class BigParallelRestoreTest : public ParallelRestoreTest {
 protected:
  static constexpr float kOld = 1, kNew = 2;

  void SetUp() override {
    pristine_ = fs::path(base_.path()) / "pristine";
    fs::create_directory(pristine_);
    for (const float seed : {kOld, kNew}) {
      RunInProcessRanks(Saved(), [&](Communicator& comm) {
        BigState state(seed);
        state.checkpoint.optimizer().set_iterations(static_cast<int64_t>(seed) * 10);
        CheckpointManager m(&state.checkpoint, &comm, {.directory = pristine_.string()});
        ASSERT_OK(m.Save());
      });
    }
  }

  // Every rank restores OK and holds the state saved with `seed`. The
  // arrays reach the other ranks in all-gathers of 64 KiB per rank as they
  // are read (13 rounds for the big array at 2 ranks, 9 at 3), so that the
  // all-gathers run while the reads still go on, and go on when one fails.
  void ExpectEveryRankRestores(const fs::path& dir, float seed, Env* env = nullptr) {
    const BigState expected(seed);
    RunInProcessRanks(Reading(), [&](Communicator& comm) {
      BigState state(0);
      CheckpointManager m(&state.checkpoint, &comm, {.directory = dir.string(), .env = env});
      auto r = m.RestoreLatest({.gather_piece_bytes = 64 << 10});
      ASSERT_OK(r.status());
      ASSERT_TRUE(r->has_value());
      EXPECT_EQ(**r, static_cast<int64_t>(seed) * 10) << "rank " << comm.rank();
      EXPECT_TRUE(state == expected) << "rank " << comm.rank() << " restored other values";
    });
  }
};

TEST_P(BigParallelRestoreTest, DamageAnywhereInAnyShardFallsBackOnEveryRank) {
  ExpectEveryRankRestores(pristine_, kNew);
  const uint64_t chunk = internal::kChecksumChunkBytes;
  for (int s = 0; s < Saved(); ++s) {
    const fs::path shard = fs::path("ckpt-20") / Shard(s, Saved());
    const uint64_t n = fs::file_size(pristine_ / shard);
    ASSERT_GT(n, 4 * chunk);
    for (const uint64_t at : {uint64_t{100}, chunk - 1, chunk, 3 * chunk + 7, n / 2, n - 1}) {
      SCOPED_TRACE(shard.string() + ": byte " + std::to_string(at) + " flipped");
      const fs::path d = Fresh();
      FlipByte(d / shard, at);
      ExpectEveryRankRestores(d, kOld);
      fs::remove_all(d);
    }
    for (const uint64_t at : {n / 3, n - 1}) {
      SCOPED_TRACE(shard.string() + ": cut at byte " + std::to_string(at));
      const fs::path d = Fresh();
      fs::resize_file(d / shard, at);
      ExpectEveryRankRestores(d, kOld);
      fs::remove_all(d);
    }
  }
}

TEST_P(BigParallelRestoreTest, EachShardByteIsReadOnceInAll) {
  testing::FaultInjectionEnv env;
  ExpectEveryRankRestores(pristine_, kNew, &env);
  std::vector<std::string> expected = {std::string(kManifestFile)};
  for (int s = 0; s < Saved(); ++s) expected.push_back(Shard(s, Saved()));
  ExpectEachByteReadOnce(
      env.reads(), pristine_ / "ckpt-20", [](const fs::path& p) { return p.filename().string(); },
      expected);
}

INSTANTIATE_TEST_SUITE_P(Worlds, BigParallelRestoreTest,
                         ::testing::Combine(::testing::Values(1, 2, 3), ::testing::Values(1, 2, 3)),
                         [](const auto& info) {
                           return "Saved" + std::to_string(std::get<0>(info.param)) + "_Read" +
                                  std::to_string(std::get<1>(info.param));
                         });

// Arrays are read in place, so a damaged newest checkpoint may leave its
// bytes in an array the older one lacks (allow_missing): refused, naming
// it; with undo_on_failure the array keeps the value it had.
TEST(DamagedInPlaceTest, AnArrayTheFallbackLacksIsRefusedOrUndone) {
  TempDir dir;
  std::vector<float> extra_saved(70'000, 3.5f);
  for (const bool with_extra : {false, true}) {
    RunInProcessRanks(2, [&](Communicator& comm) {
      BigState state(with_extra ? 2 : 1);
      std::vector<float> extra = extra_saved;
      if (with_extra) state.checkpoint.Track("extra", std::span<float>(extra));
      state.checkpoint.optimizer().set_iterations(with_extra ? 20 : 10);
      CheckpointManager m(&state.checkpoint, &comm, {.directory = dir.path()});
      ASSERT_OK(m.Save());
    });
  }
  const fs::path newest = fs::path(dir.path()) / "ckpt-20" / Shard(1, 2);
  FlipByte(newest, fs::file_size(newest) - 3);
  for (const bool undo : {false, true}) {
    SCOPED_TRACE(undo ? "undo_on_failure" : "default");
    RunInProcessRanks(2, [&](Communicator& comm) {
      BigState state(0);
      std::vector<float> extra(extra_saved.size(), -1.0f);
      state.checkpoint.Track("extra", std::span<float>(extra));
      CheckpointManager m(&state.checkpoint, &comm, {.directory = dir.path()});
      auto r = m.RestoreLatest({.allow_missing = true, .undo_on_failure = undo});
      if (!undo) {
        ASSERT_FALSE(r.ok());
        EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
        EXPECT_NE(r.status().message().find("read into extra"), std::string::npos)
            << r.status().message();
        return;
      }
      ASSERT_OK(r.status());
      EXPECT_EQ(**r, 10);
      EXPECT_TRUE(state == BigState(1));
      EXPECT_EQ(m.fresh_objects(), std::vector<std::string>{"extra"});
      EXPECT_EQ(extra, std::vector<float>(extra_saved.size(), -1.0f)) << "rank " << comm.rank();
    });
  }
}

TEST(GatherPieceTest, ZeroBytesIsRefusedBeforeAnythingIsRead) {
  TempDir dir;
  RunInProcessRanks(2, [&](Communicator& comm) {
    BigState state(1);
    CheckpointManager m(&state.checkpoint, &comm, {.directory = dir.path()});
    ASSERT_OK(m.Save());
  });
  RunInProcessRanks(2, [&](Communicator& comm) {
    BigState fresh(0);
    CheckpointManager reader(&fresh.checkpoint, &comm, {.directory = dir.path()});
    auto r = reader.RestoreLatest({.gather_piece_bytes = 0});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << r.status().message();
    EXPECT_TRUE(fresh == BigState(0));
  });
}

// A manifest that lies about where a slice lies (valid checksum) is damage,
// found from the manifest alone.
TEST(LayoutTest, AMisplacedSliceInAValidManifestIsDataLoss) {
  TempDir dir;
  for (const Status& st : SaveOnRanks({.world = 2}, dir.path(), Env::Default(), StateA())) {
    ASSERT_OK(st);
  }
  const fs::path ckpt = fs::path(dir.path()) / CkptName(StateA());
  const fs::path file = ckpt / kManifestFile;
  const std::string pristine = ReadFileToString(file.string());
  for (const char* what : {"at", "count", "offset"}) {
    SCOPED_TRACE(what);
    nlohmann::json m = nlohmann::json::parse(pristine);
    nlohmann::json& slice = m["shards"][1]["slices"][0];
    const int field = std::string(what) == "at" ? 3 : std::string(what) == "count" ? 2 : 1;
    slice[field] = slice[field].get<uint64_t>() + 4;
    m["checksum"] = internal::ManifestChecksum(m);
    WriteBytes(file.string(), m.dump(2) + "\n");
    auto c = ReadManifest(Env::Default(), ckpt.string());
    EXPECT_EQ(c.status().code(), StatusCode::kDataLoss) << c.status().ToString();
  }
}

}  // namespace
}  // namespace holdfast
