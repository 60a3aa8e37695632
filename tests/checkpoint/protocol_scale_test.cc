// The checkpoint protocol at scale (issue 18; bench/protocol measures the
// same up to W = 64 and prints the table): over W in {1, 4, 16, 64}
// in-process ranks, a synchronous save and a restore of a ~4 MB state,
// counted per rank through bench/protocol_counting.h. As
// docs/parallel-restore.md designs it: at restore each rank reads about
// state/W and every shard byte is read once in all; the collectives a rank
// issues do not grow with W; the chief receives no more than a constant per
// rank plus the state's checksum-chunk digests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bench/protocol_counting.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/manager.h"
#include "checkpoint/names.h"
#include "core/layers.h"
#include "core/optimizer.h"
#include "core/sequential.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using bench::Collective;
using bench::CountedRun;
using bench::CountingEnv;

constexpr uint64_t kChunk = internal::kChecksumChunkBytes;
constexpr uint64_t kStateBytes = 4'000'000;
constexpr int kWorlds[] = {1, 4, 16, 64};

// Each rank's own position in its data (TrackPerRank): every shard holds
// one, so a cost per small slice would grow with W.
struct Sampler {
  int64_t rank = -1, position = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& rank& position;
  }
  bool operator==(const Sampler&) const = default;
};

// A training state of about kStateBytes in four arrays of P floats
// (parameters of Dense(P / 2) on one input, Adam's m and v, an EMA), plus a
// replicated user object and a per-rank one. Seed 0: blank, to restore into.
struct ScaleState {
  explicit ScaleState(uint64_t seed, int rank = 0) : model(1) {
    model.Add<Dense>(static_cast<int>(kStateBytes / 32));
    model.Build(3);
    adam.Build(model.store().size());
    std::vector<std::span<float>> arrays = {model.store().params()};
    for (OptimizerSlot& slot : adam.slots()) arrays.push_back(slot.values);
    ema.resize(model.store().params().size());
    arrays.push_back(ema);
    for (size_t a = 0; a < arrays.size(); ++a) {
      for (size_t i = 0; i < arrays[a].size(); ++i) {
        arrays[a][i] =
            seed == 0 ? 0.0f : static_cast<float>(seed * 1000 + a) + static_cast<float>(i) * 1e-3f;
      }
    }
    if (seed != 0) {
      adam.set_iterations(static_cast<int64_t>(seed) * 10);
      loader = {static_cast<int64_t>(seed), {1, 2, 3}, "scale"};
      sampler = {rank, static_cast<int64_t>(seed) * 100 + rank};
    }
    checkpoint = std::make_unique<Checkpoint>(&model, &adam);
    checkpoint->Track("ema", std::span<float>(ema));
    checkpoint->Track("loader", &loader);
    checkpoint->TrackPerRank("sampler", &sampler);
  }
  // Every array bit for bit, the step and the user object.
  bool SameAs(ScaleState& o) {
    const std::vector<float> mine = Flat(), theirs = o.Flat();
    return mine.size() == theirs.size() &&
           std::memcmp(mine.data(), theirs.data(), mine.size() * sizeof(float)) == 0 &&
           adam.iterations() == o.adam.iterations() && loader == o.loader && sampler == o.sampler;
  }
  std::vector<float> Flat() {
    const std::span<const float> p = std::as_const(model).store().params();
    std::vector<float> all(p.begin(), p.end());
    for (OptimizerSlot& slot : adam.slots())
      all.insert(all.end(), slot.values.begin(), slot.values.end());
    all.insert(all.end(), ema.begin(), ema.end());
    return all;
  }

  Sequential model;
  Adam adam;
  std::vector<float> ema;
  LoaderState loader;
  Sampler sampler;
  std::unique_ptr<Checkpoint> checkpoint;
};

struct Measured {
  CountedRun save, restore;
  std::vector<CountingEnv::Read> restore_reads;
  std::map<std::string, uint64_t> file_sizes;  // the committed checkpoint's files, by path
  uint64_t manifest_bytes = 0;
  std::vector<bool> restored_exactly;  // by rank
};

// Every world measured once per test process, for all the tests below (the
// 64-rank run is the slow part: its ranks build 64 states twice).
class ProtocolScaleTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    measured_ = new std::map<int, Measured>;
    expected_ = new ScaleState(1);
    for (int world : kWorlds) Measure(world);
  }
  static void TearDownTestSuite() {
    delete measured_;
    delete expected_;
  }

  static void Measure(int world) {
    TempDir dir;
    CountingEnv env;
    const CheckpointOptions options = {.directory = dir.path(), .max_to_keep = 1, .env = &env};
    Measured& m = (*measured_)[world];
    m.save = bench::RunCounted(
        world, env, [](Communicator& comm) { return std::make_unique<ScaleState>(1, comm.rank()); },
        [&](Communicator& comm, std::unique_ptr<ScaleState>& state) {
          CheckpointManager manager(state->checkpoint.get(), &comm, options);
          ASSERT_OK(manager.Save());
        });
    std::vector<std::unique_ptr<ScaleState>> states(static_cast<size_t>(world));
    m.restore = bench::RunCounted(
        world, env,
        [&](Communicator& comm) {
          auto& mine = states[static_cast<size_t>(comm.rank())];
          mine = std::make_unique<ScaleState>(0);
          return mine.get();
        },
        [&](Communicator& comm, ScaleState* state) {
          CheckpointManager manager(state->checkpoint.get(), &comm, options);
          auto restored = manager.RestoreLatest();
          ASSERT_OK(restored.status());
          ASSERT_TRUE(restored->has_value());
        });
    m.restore_reads = env.reads();
    for (size_t r = 0; r < states.size(); ++r) {
      ScaleState expected(1, static_cast<int>(r));
      m.restored_exactly.push_back(states[r]->SameAs(expected));
    }
    const fs::path committed = fs::path(dir.path()) / CheckpointName(10);
    for (const auto& e : fs::directory_iterator(committed)) {
      m.file_sizes[e.path().string()] = e.file_size();
    }
    m.manifest_bytes = fs::file_size(committed / kManifestFile);
  }

  static uint64_t StateBytes() {
    return expected_->Flat().size() * sizeof(float);  // the loader's archive is a few bytes
  }

  static std::map<int, Measured>* measured_;
  static ScaleState* expected_;
};

std::map<int, Measured>* ProtocolScaleTest::measured_ = nullptr;
ScaleState* ProtocolScaleTest::expected_ = nullptr;

TEST_F(ProtocolScaleTest, EveryRankRestoresTheWholeStateBitForBit) {
  for (const auto& [world, m] : *measured_) {
    for (size_t r = 0; r < m.restored_exactly.size(); ++r) {
      EXPECT_TRUE(m.restored_exactly[r]) << "W=" << world << ": rank " << r;
    }
  }
}

// About state/W each: its shard, whose headers and prefix add well under a
// chunk, with two chunks of slack for cuts at chunk boundaries and one more
// for everything else; the chief also reads the manifest.
TEST_F(ProtocolScaleTest, EachRankReadsItsShareOfTheState) {
  for (const auto& [world, m] : *measured_) {
    for (int r = 0; r < world; ++r) {
      SCOPED_TRACE("W=" + std::to_string(world) + ": rank " + std::to_string(r));
      uint64_t bound = StateBytes() / static_cast<uint64_t>(world) + 2 * kChunk + kChunk;
      if (r == 0) bound += m.manifest_bytes;
      EXPECT_LE(m.restore.ranks[static_cast<size_t>(r)].io.bytes_read, bound);
    }
    EXPECT_EQ(m.restore.no_rank.bytes_read, 0u);
  }
}

// Every byte of every shard once in all, the manifest once, by the chief;
// nothing else is read.
TEST_F(ProtocolScaleTest, EveryShardByteIsReadExactlyOnce) {
  for (const auto& [world, m] : *measured_) {
    SCOPED_TRACE("W=" + std::to_string(world));
    ReadRanges by_file;
    for (const CountingEnv::Read& read : m.restore_reads) {
      by_file[read.path].emplace_back(read.offset, read.offset + read.bytes);
      if (fs::path(read.path).filename() == kManifestFile) {
        EXPECT_EQ(read.rank, 0);
      }
    }
    EXPECT_EQ(m.file_sizes.size(), static_cast<size_t>(world) + 1);  // shards and manifest
    ExpectEachByteReadOnce(std::move(by_file), m.file_sizes);
  }
}

// One rank's restore is the same sequence of collectives at any W (W = 1 is
// its own case: no all-gather is needed, the chief reads everything).
TEST_F(ProtocolScaleTest, CollectivesPerRankAtRestoreDoNotGrowWithW) {
  std::map<int, int64_t> calls;
  for (const auto& [world, m] : *measured_) {
    if (world == 1) continue;
    calls[world] = m.restore.ranks[0].collective_calls;
    for (int r = 0; r < world; ++r) {
      EXPECT_EQ(m.restore.ranks[static_cast<size_t>(r)].collective_calls, calls[world])
          << "W=" << world << ": rank " << r << " issued another count than the chief";
    }
  }
  EXPECT_EQ(calls[16], calls[4]);
  EXPECT_EQ(calls[64], calls[4]);
  // And the save: a Gather of votes, a few broadcasts, at any W.
  EXPECT_EQ(measured_->at(64).save.ranks[5].collective_calls,
            measured_->at(4).save.ranks[1].collective_calls);
}

// What the chief receives in Gather grows with the shards (one vote or
// report per rank) and the digests, nothing else.
//
// Restore: from each other rank, three statuses (GatherStatus; OK encodes
// as "0|", 2 bytes: the small-state verdict, the user-object verdict, its
// read's status) and its read report, ShareRead::Encode of its one extent:
// {"chunks":[[<shard>,<first chunk>,[<digests>]]],"damage":""}, a 31-byte
// frame plus two indices (at most 10 digits each) and the digests. A shard
// rarely ends on a chunk boundary, so each rank's extent has one partial
// chunk beyond state / 64 KiB: one digest (at most 20 digits and a comma)
// belongs to the per-rank constant. 6 + 31 + 20 + 21 = 78 bytes: 96 per rank
// leaves room for a longer number, not for anything that grows with W (at
// W = 64 the chief gets about 59 bytes per rank, digest included). Each
// other digest, a uint64 in JSON, takes at most 21 bytes: 8 x 4 covers it.
//
// Save: each rank's vote (WriteOwnShard): ok, its file name, size and
// hash, one [name, offset, count, at] per blob it writes (the four split
// arrays), the tracked objects' hash, empty replica and per-rank lists:
// about 275 bytes here, at any W. 512 bytes per rank.
TEST_F(ProtocolScaleTest, TheChiefsGatherBytesGrowOnlyWithShardsAndDigests) {
  const Measured& m = measured_->at(64);
  const uint64_t digests = StateBytes() / kChunk;
  constexpr uint64_t kPerRankRestore = 96, kPerRankSave = 512;
  const uint64_t restore_bytes = m.restore.ranks[0].of(Collective::kGather).bytes_received;
  EXPECT_LE(restore_bytes, kPerRankRestore * 64 + digests * 8 * 4);
  const uint64_t save_bytes = m.save.ranks[0].of(Collective::kGather).bytes_received;
  EXPECT_LE(save_bytes, kPerRankSave * 64);
  // Every other rank receives nothing in a Gather.
  for (size_t r = 1; r < m.restore.ranks.size(); ++r) {
    EXPECT_EQ(m.restore.ranks[r].of(Collective::kGather).bytes_received, 0u) << "rank " << r;
  }
  std::printf(
      "W=64: the chief received %llu bytes in Gather at restore (%llu digests), %llu at "
      "save\n",
      static_cast<unsigned long long>(restore_bytes), static_cast<unsigned long long>(digests),
      static_cast<unsigned long long>(save_bytes));
}

}  // namespace
}  // namespace holdfast
