// Every kind of tracked object (docs/checkpoint-state.md): another model and
// optimizer, float64 and int64 arrays, scalars, a replicated user type with a
// Boost.Serialization serialize(), and per-rank user state. Each comes back
// bit for bit; replicated state across a change of world size, per-rank state
// only on the same world (or with a reshard function); a type that grew a
// field reads its older checkpoints; and restore is strict unless told
// otherwise.
#include <gtest/gtest.h>

#include <boost/serialization/string.hpp>
#include <boost/serialization/vector.hpp>
#include <boost/serialization/version.hpp>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "distribute/thread_communicator.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/models.h"
#include "tests/testutil/testutil.h"

namespace holdfast::tracked_objects_test {

// A data loader's position, as a program first wrote it (class version 1).
struct LoaderV1 {
  int64_t epoch = 0, position = 0;
  std::vector<int64_t> order;
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& epoch& position& order;
  }
};

// The same type after it grew a field (class version 2): it still reads
// version 1's archives, and the new field keeps its default there.
struct LoaderV2 {
  int64_t epoch = 0, position = 0;
  std::vector<int64_t> order;
  std::string source = "unset";
  template <class Archive>
  void serialize(Archive& ar, unsigned version) {
    ar& epoch& position& order;
    if (version >= 2) ar& source;
  }
};

// Each rank's own: a sampler's seed and how many it drew.
struct Sampler {
  uint64_t seed = 0;
  int64_t drawn = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned /*version*/) {
    ar& seed& drawn;
  }
};

// A version-5 type that dropped support for archives older than version 4.
struct Picky {
  int64_t epoch = 0;
  template <class Archive>
  void serialize(Archive& ar, unsigned version) {
    if (Archive::is_loading::value && version < 4) {
      throw std::runtime_error("version " + std::to_string(version) + " is no longer read");
    }
    ar& epoch;
  }
};

// A type whose serialize() throws when saving (a bug in the program's code).
struct Broken {
  template <class Archive>
  void serialize(Archive&, unsigned) {
    throw std::runtime_error("cannot save this");
  }
};

}  // namespace holdfast::tracked_objects_test

BOOST_CLASS_VERSION(holdfast::tracked_objects_test::LoaderV1, 1)
BOOST_CLASS_VERSION(holdfast::tracked_objects_test::LoaderV2, 2)
BOOST_CLASS_VERSION(holdfast::tracked_objects_test::Picky, 5)

namespace holdfast::tracked_objects_test {
namespace {

LoaderV1 LoaderOf(uint64_t seed) {
  const auto s = static_cast<int64_t>(seed);
  return {s, s * 31, {s, s + 1, s + 2}};
}

// Every replicated kind, with values derived from `seed`.
struct AllKinds {
  explicit AllKinds(uint64_t seed)
      : t(Trained(seed, 4)),
        ema(Trained(seed + 100, 2)),
        doubles{0.1 * double(seed), 1.0 / 3.0, -double(seed)},
        ints{int64_t(seed), -7, int64_t(1) << 40},
        lr(0.01 * double(seed)),
        warmup_left(int64_t(seed) * 5),
        loader(LoaderOf(seed)),
        checkpoint(t.model.get(), t.optimizer.get()) {
    ema.optimizer->set_iterations(static_cast<int64_t>(seed) * 11);
    checkpoint.Track("ema/model", ema.model.get());
    checkpoint.Track("ema/optimizer", ema.optimizer.get());
    checkpoint.Track("stats/doubles", std::span<double>(doubles));
    checkpoint.Track("stats/ints", std::span<int64_t>(ints));
    checkpoint.Track("schedule/lr", &lr);
    checkpoint.Track("schedule/warmup_left", &warmup_left);
    checkpoint.Track("loader", &loader);
  }
  void ExpectEqual(AllKinds& want) {
    EXPECT_EQ(Flat(t), Flat(want.t));
    EXPECT_EQ(Flat(ema), Flat(want.ema));
    EXPECT_EQ(ema.optimizer->iterations(), want.ema.optimizer->iterations());
    EXPECT_EQ(doubles, want.doubles);
    EXPECT_EQ(ints, want.ints);
    EXPECT_EQ(lr, want.lr);
    EXPECT_EQ(warmup_left, want.warmup_left);
    EXPECT_EQ(loader.epoch, want.loader.epoch);
    EXPECT_EQ(loader.position, want.loader.position);
    EXPECT_EQ(loader.order, want.loader.order);
  }
  Trainee t, ema;
  std::vector<double> doubles;
  std::vector<int64_t> ints;
  double lr;
  int64_t warmup_left;
  LoaderV1 loader;
  Checkpoint checkpoint;
};

class AllKindsRoundTrip : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(AllKindsRoundTrip, EveryKindComesBackBitForBit) {
  const auto [saved_on, restored_on] = GetParam();
  TempDir dir;
  RunInProcessRanks(saved_on, [&](Communicator& comm) {
    AllKinds s(3);
    CheckpointManager m(&s.checkpoint, &comm, {.directory = dir.path()});
    ASSERT_OK(m.Save());
  });
  AllKinds want(3);
  RunInProcessRanks(restored_on, [&](Communicator& comm) {
    AllKinds s(9);  // other values everywhere
    CheckpointManager m(&s.checkpoint, &comm, {.directory = dir.path()});
    auto restored = m.RestoreLatest();
    ASSERT_OK(restored);
    ASSERT_TRUE(restored->has_value());
    s.ExpectEqual(want);
  });
}

INSTANTIATE_TEST_SUITE_P(Worlds, AllKindsRoundTrip,
                         ::testing::Values(std::pair{1, 1}, std::pair{2, 2}, std::pair{3, 3},
                                           std::pair{3, 2}, std::pair{1, 3}));

TEST(AllKindsTest, TheManifestDescribesEveryObject) {
  TempDir dir;
  {
    LocalCommunicator comm;
    AllKinds s(3);
    CheckpointManager m(&s.checkpoint, &comm, {.directory = dir.path()});
    ASSERT_OK(m.Save());
  }
  auto c = ReadCheckpoint(Env::Default(), dir.path() + "/ckpt-4");
  ASSERT_OK(c.status());
  std::map<std::string, std::string> described;
  for (const ObjectInfo& o : c->objects) described[o.path] = Describe(o);
  EXPECT_EQ(described.size(), 9u);
  EXPECT_EQ(described["stats/doubles"], "float64[3]");
  EXPECT_EQ(described["stats/ints"], "int64[3]");
  EXPECT_EQ(described["schedule/lr"], "float64");
  EXPECT_EQ(described["schedule/warmup_left"], "int64");
  EXPECT_EQ(described["loader"], "serializable holdfast::tracked_objects_test::LoaderV1 v1");
  EXPECT_EQ(described["ema/model"].rfind("model ", 0), 0u) << described["ema/model"];
  EXPECT_EQ(described["ema/optimizer"].rfind("optimizer ", 0), 0u);
}

// A run of `world` ranks that saved a model and "loader" (LoaderV1 at
// LoaderOf(5)); the tests restore it into runs that track other things.
void SaveWithLoader(const std::string& dir, int world = 1) {
  RunInProcessRanks(world, [&](Communicator& comm) {
    Trainee t = Trained(3, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    LoaderV1 loader = LoaderOf(5);
    c.Track("loader", &loader);
    CheckpointManager m(&c, &comm, {.directory = dir});
    ASSERT_OK(m.Save());
  });
}

TEST(VersionTest, AVersion2TypeReadsTheCheckpointsItsVersion1Wrote) {
  TempDir dir;
  SaveWithLoader(dir.path(), 2);
  LocalCommunicator comm;
  Trainee t = Trained(8, 4);
  Checkpoint c(t.model.get(), t.optimizer.get());
  LoaderV2 loader;
  c.Track("loader", &loader);
  CheckpointManager m(&c, &comm, {.directory = dir.path()});
  ASSERT_OK(m.RestoreLatest());
  const LoaderV1 want = LoaderOf(5);
  EXPECT_EQ(loader.epoch, want.epoch);
  EXPECT_EQ(loader.position, want.position);
  EXPECT_EQ(loader.order, want.order);
  EXPECT_EQ(loader.source, "unset");  // version 1 had none

  // And the other way: version 1 cannot know what version 2 wrote.
  loader.source = "shards/train";
  t.optimizer->set_iterations(5);
  ASSERT_OK(m.Save());
  LocalCommunicator comm1;
  Trainee t1 = Trained(8, 4);
  Checkpoint c1(t1.model.get(), t1.optimizer.get());
  LoaderV1 old;
  c1.Track("loader", &old);
  TempDir other;
  CopyTree(dir.path(), other.path());
  CheckpointManager m1(&c1, &comm1, {.directory = other.path()});
  auto refused = m1.RestoreLatest();
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().message().find("loader (class version 2 saved, 1 here)"),
            std::string::npos)
      << refused.status().message();
}

Sampler SamplerOf(int rank, uint64_t seed) {
  return {seed * 1000 + static_cast<uint64_t>(rank), static_cast<int64_t>(seed) + rank};
}

void SaveSamplers(int world, const std::string& dir) {
  RunInProcessRanks(world, [&](Communicator& comm) {
    Trainee t = Trained(3, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    Sampler sampler = SamplerOf(comm.rank(), 3);
    c.TrackPerRank("sampler", &sampler);
    CheckpointManager m(&c, &comm, {.directory = dir});
    ASSERT_OK(m.Save());
  });
}

class PerRankTest : public ::testing::TestWithParam<int> {};

TEST_P(PerRankTest, EachRankGetsItsOwnBack) {
  const int world = GetParam();
  TempDir dir;
  SaveSamplers(world, dir.path());
  RunInProcessRanks(world, [&](Communicator& comm) {
    Trainee t = Trained(8, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    Sampler sampler = SamplerOf(comm.rank(), 8);
    c.TrackPerRank("sampler", &sampler);
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    ASSERT_OK(m.RestoreLatest());
    EXPECT_EQ(sampler.seed, SamplerOf(comm.rank(), 3).seed);
    EXPECT_EQ(sampler.drawn, SamplerOf(comm.rank(), 3).drawn);
  });
}

INSTANTIATE_TEST_SUITE_P(Worlds, PerRankTest, ::testing::Values(1, 2, 3));

// Asynchronous saves carry per-rank and checked replicated objects too:
// each is serialized at the save step (later changes are not in it), every
// rank's per-rank size reaches the chief through its vote file, and each
// rank gets its own copy back.
TEST(PerRankTest, AnAsynchronousSaveCarriesThemAsTheSynchronousOneDoes) {
  TempDir dir;
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(3, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    Sampler sampler = SamplerOf(comm.rank(), 3);
    LoaderV1 loader = LoaderOf(5);
    c.TrackPerRank("sampler", &sampler);
    c.Track("loader", &loader, {.check_replicas = true});
    StepReplica replica(comm);
    CheckpointManager m(&c, &comm, {.directory = dir.path(), .async = true, .replica = &replica});
    ASSERT_OK(m.Save());
    sampler.drawn = -1;  // after the save step: not in the checkpoint
    loader.position = -1;
    ASSERT_OK(StepUntilResolved(m, replica, Status::Ok()));
    EXPECT_EQ(m.last_committed_step(), 4);
  });
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(8, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    Sampler sampler;
    LoaderV1 loader;
    c.TrackPerRank("sampler", &sampler);
    c.Track("loader", &loader, {.check_replicas = true});
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    ASSERT_OK(m.RestoreLatest());
    EXPECT_EQ(sampler.seed, SamplerOf(comm.rank(), 3).seed);
    EXPECT_EQ(sampler.drawn, SamplerOf(comm.rank(), 3).drawn);
    EXPECT_EQ(loader.position, LoaderOf(5).position);
  });
}

TEST(PerRankWorldTest, AnotherWorldIsRefusedInOneLineNamingTheObject) {
  TempDir dir;
  SaveSamplers(3, dir.path());
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(8, 4);
    const uint64_t before = t.Hash();
    Checkpoint c(t.model.get(), t.optimizer.get());
    Sampler sampler = SamplerOf(comm.rank(), 8);
    c.TrackPerRank("sampler", &sampler);
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    auto restored = m.RestoreLatest();
    ASSERT_FALSE(restored.ok());
    EXPECT_TRUE(RefusesTheRun(restored.status()));
    EXPECT_NE(restored.status().message().find(
                  "'sampler' is per-rank state saved by 3 ranks; this run has 2 (give "
                  "TrackPerRank a reshard function)"),
              std::string::npos)
        << restored.status().message();
    EXPECT_EQ(restored.status().message().find('\n'), std::string::npos);
    EXPECT_EQ(t.Hash(), before);
    EXPECT_EQ(sampler.seed, SamplerOf(comm.rank(), 8).seed);
  });
}

TEST(PerRankWorldTest, AReshardFunctionCarriesItToAnotherWorld) {
  TempDir dir;
  SaveSamplers(3, dir.path());
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(8, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    Sampler sampler;
    // The draws of all the old ranks, counted on the new rank 0; fresh
    // seeds from the old ranks' seeds.
    c.TrackPerRank<Sampler>("sampler", &sampler, [](std::vector<Sampler> saved, int rank, int) {
      Sampler s{saved[0].seed + 100 + static_cast<uint64_t>(rank), 0};
      if (rank == 0) {
        for (const Sampler& old : saved) s.drawn += old.drawn;
      }
      return s;
    });
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    ASSERT_OK(m.RestoreLatest());
    EXPECT_EQ(sampler.seed, SamplerOf(0, 3).seed + 100 + static_cast<uint64_t>(comm.rank()));
    EXPECT_EQ(sampler.drawn, comm.rank() == 0 ? 3 + 4 + 5 : 0);
  });
}

TEST(PerRankWorldTest, ChiefWritesAllCannotSavePerRankStateAndSaysSoAtStart) {
  TempDir dir;
  LocalCommunicator comm;
  Trainee t = Trained(3, 4);
  Checkpoint c(t.model.get(), t.optimizer.get());
  Sampler sampler;
  c.TrackPerRank("sampler", &sampler);
  CheckpointManager m(&c, &comm, {.directory = dir.path(), .chief_writes_all = true});
  auto restored = m.RestoreLatest();
  ASSERT_FALSE(restored.ok());
  EXPECT_EQ(restored.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(restored.status().message().find("per-rank 'sampler'"), std::string::npos);
}

TEST(ReplicaCheckTest, ACopyThatDiffersOnOneRankFailsTheSaveNamingIt) {
  TempDir dir;
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(3, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    LoaderV1 loader = LoaderOf(5);
    c.Track("loader", &loader, {.check_replicas = true});
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    ASSERT_OK(m.Save());
    if (comm.rank() == 1) loader.position += 1;  // a bug: the replicas drifted
    t.optimizer->set_iterations(t.optimizer->iterations() + 1);
    const Status s = m.Save();
    ASSERT_FALSE(s.ok());
    EXPECT_NE(s.message().find("rank 1: its copy of the replicated 'loader' differs from the "
                               "chief's"),
              std::string::npos)
        << s.message();
    EXPECT_EQ(m.last_committed_step(), 4);
  });
}

TEST(StrictRestoreTest, AMissingAndAnUnusedObjectAreOneLineAndNothingChanges) {
  TempDir dir;
  SaveWithLoader(dir.path());
  LocalCommunicator comm;
  Trainee t = Trained(8, 4);
  const uint64_t before = t.Hash();
  Checkpoint c(t.model.get(), t.optimizer.get());
  double lr = 0.5;
  c.Track("schedule/lr", &lr);  // not saved; and "loader" is not tracked
  CheckpointManager m(&c, &comm, {.directory = dir.path()});
  auto restored = m.RestoreLatest();
  ASSERT_FALSE(restored.ok());
  const Status& s = restored.status();
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(s.message().find('\n'), std::string::npos);
  EXPECT_NE(
      s.message().find("it has no schedule/lr; it holds what this run does not track: loader"),
      std::string::npos)
      << s.message();
  // (refused from the manifest alone: nothing was read)
  EXPECT_EQ(t.Hash(), before);
  EXPECT_EQ(lr, 0.5);
  EXPECT_EQ(t.optimizer->iterations(), 4);
}

// On every rank: the chief's plan says which objects start fresh.
TEST(StrictRestoreTest, AllowMissingStartsANewObjectFreshAndSaysWhich) {
  TempDir dir;
  SaveWithLoader(dir.path(), 2);
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(8, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    LoaderV1 loader;
    double lr = 0.5;
    c.Track("loader", &loader);
    c.Track("schedule/lr", &lr);  // new in this run
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    auto restored = m.RestoreLatest({.allow_missing = true});
    ASSERT_OK(restored);
    EXPECT_EQ(m.fresh_objects(), std::vector<std::string>{"schedule/lr"});
    EXPECT_EQ(lr, 0.5);
    EXPECT_EQ(loader.order, LoaderOf(5).order);
    EXPECT_EQ(t.Params(), Trained(3, 4).Params());
  });
}

TEST(StrictRestoreTest, ExpectPartialLeavesUnusedObjectsUnread) {
  TempDir dir;
  SaveWithLoader(dir.path());
  LocalCommunicator comm;
  Trainee t = Trained(8, 4);
  Checkpoint c(t.model.get(), t.optimizer.get());
  CheckpointManager m(&c, &comm, {.directory = dir.path()});
  auto restored = m.RestoreLatest({.expect_partial = true});
  ASSERT_OK(restored);
  EXPECT_EQ(t.Params(), Trained(3, 4).Params());
  EXPECT_TRUE(m.fresh_objects().empty());
}

// The chief reads every user type as its type before anything changes: a
// type that cannot read its archive leaves the model, the arrays and the
// user objects that did read untouched, and the line names it.
TEST(StrictRestoreTest, AUserTypeThatCannotReadItsArchiveChangesNothing) {
  TempDir dir;
  {
    LocalCommunicator comm;
    Trainee t = Trained(3, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    LoaderV1 first = LoaderOf(5), loader = LoaderOf(6);
    std::vector<double> stats = {1.5, 2.5};
    c.Track("first", &first);
    c.Track("stats", std::span<double>(stats));
    c.Track("loader", &loader);
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    ASSERT_OK(m.Save());
  }
  LocalCommunicator comm;
  Trainee t = Trained(8, 4);
  const uint64_t before = t.Hash();
  Checkpoint c(t.model.get(), t.optimizer.get());
  LoaderV1 first;
  std::vector<double> stats = {0, 0};
  Picky loader{77};
  c.Track("first", &first);
  c.Track("stats", std::span<double>(stats));
  c.Track("loader", &loader);
  CheckpointManager m(&c, &comm, {.directory = dir.path()});
  auto restored = m.RestoreLatest();
  ASSERT_FALSE(restored.ok());
  EXPECT_EQ(restored.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(restored.status().message().find("'loader' does not read as "
                                             "holdfast::tracked_objects_test::Picky: version 1 is "
                                             "no longer read"),
            std::string::npos)
      << restored.status().message();
  EXPECT_EQ(t.Hash(), before);
  EXPECT_EQ(t.optimizer->iterations(), 4);
  EXPECT_EQ(stats, (std::vector<double>{0, 0}));
  EXPECT_EQ(first.order, std::vector<int64_t>{});
  EXPECT_EQ(loader.epoch, 77);
}

// Every rank must track the same objects: a save where one rank tracks
// another array fails naming that rank, and a restore is refused on every
// rank (no rank waits for a broadcast the others never make).
TEST(RanksTrackAlikeTest, ARankThatTracksOtherObjectsFailsTheSaveAndTheRestore) {
  TempDir dir;
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(3, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    std::vector<float> ema(comm.rank() == 1 ? 5 : 4, 1.0f);
    c.Track("ema", ema);
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    const Status saved = m.Save();
    ASSERT_FALSE(saved.ok());
    EXPECT_NE(saved.message().find("rank 1: it tracks other objects than the chief"),
              std::string::npos)
        << saved.message();
    auto restored = m.RestoreLatest();
    ASSERT_FALSE(restored.ok());
    EXPECT_NE(restored.status().message().find("the ranks track different objects"),
              std::string::npos)
        << restored.status().message();
  });
}

// A serialize() that throws on the chief alone fails the save on every
// rank, naming the object; the previous checkpoint stays.
TEST(SaveErrorsTest, ASerializeThatThrowsFailsTheSaveOnEveryRank) {
  TempDir dir;
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(3, 4);
    Checkpoint c(t.model.get(), t.optimizer.get());
    Broken broken;
    c.Track("broken", &broken);
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    const Status saved = m.Save();
    ASSERT_FALSE(saved.ok());
    EXPECT_NE(saved.message().find("rank 0: "), std::string::npos) << saved.message();
    EXPECT_NE(saved.message().find("cannot serialize 'broken': cannot save this"),
              std::string::npos)
        << saved.message();
    EXPECT_EQ(m.last_committed_step(), -1);
  });
}

// A reshard that fails for one new rank fails the restore on every rank
// before any of them changes.
TEST(PerRankWorldTest, AReshardThatFailsForOneRankChangesNothingAnywhere) {
  TempDir dir;
  SaveSamplers(3, dir.path());
  RunInProcessRanks(2, [&](Communicator& comm) {
    Trainee t = Trained(8, 4);
    const uint64_t before = t.Hash();
    Checkpoint c(t.model.get(), t.optimizer.get());
    Sampler sampler{9, 9};
    c.TrackPerRank<Sampler>("sampler", &sampler, [](std::vector<Sampler> saved, int rank, int) {
      if (rank == 1) throw std::runtime_error("no seed left for rank 1");
      return saved[0];
    });
    CheckpointManager m(&c, &comm, {.directory = dir.path()});
    auto restored = m.RestoreLatest();
    ASSERT_FALSE(restored.ok());
    EXPECT_NE(restored.status().message().find(
                  "cannot reshard 'sampler' to rank 1 of 2: no seed left for rank 1"),
              std::string::npos)
        << restored.status().message();
    EXPECT_EQ(t.Hash(), before);
    EXPECT_EQ(sampler.seed, 9u);
  });
}

TEST(TrackPathTest, ObjectsMayNotNest) {
  Trainee t = MakeClassifier(1);
  Trainee ema = MakeClassifier(2);
  Checkpoint c(t.model.get(), t.optimizer.get());
  c.Track("ema", ema.model.get());
  std::vector<float> v(3);
  EXPECT_THROW(c.Track("ema/params", v), std::invalid_argument);  // the model's blob
  EXPECT_THROW(c.Track("ema/x/y", v), std::invalid_argument);
  c.Track("ema2", v);  // a prefix of words, not of the path
  double x = 0;
  EXPECT_THROW(c.Track("ema2", &x), std::invalid_argument);
}

}  // namespace
}  // namespace holdfast::tracked_objects_test
