// Damage on disk: every file of the newest checkpoint flipped, truncated,
// deleted or extended makes restore fall back to the previous checkpoint
// (bit-exact); LATEST does not matter at all; both damaged is DataLoss; a
// manifest with a valid checksum cannot point outside the checkpoint or make
// the reader allocate what the files cannot hold.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "checkpoint/internal/manifest.h"
#include "checkpoint/internal/shard_format.h"
#include "checkpoint/manager.h"
#include "checkpoint/reader.h"
#include "core/hash.h"
#include "tests/testutil/allocation_hook.h"
#include "tests/testutil/checkpoint_helpers.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string CkptName(const State& s) { return "ckpt-" + std::to_string(s.step); }

// One way of damaging a file. `harmless`: the content is intact (the
// manifest's final newline is not part of the JSON), so the checkpoint is
// still valid and must still be used.
struct Damage {
  std::string name;
  std::function<void(const fs::path&)> apply;
  bool harmless = false;
};

std::vector<Damage> DamagesFor(const fs::path& file, bool is_shard, bool is_manifest) {
  const uint64_t n = fs::file_size(file);
  std::vector<Damage> out;
  std::vector<uint64_t> offsets = {0, n / 2, n - 1};
  if (is_shard) {
    for (uint64_t i = 1; i < 40 && i < n; ++i) offsets.push_back(i);  // the whole header
  }
  for (uint64_t off : offsets) {
    out.push_back(
        {"flip byte " + std::to_string(off), [off](const fs::path& f) { FlipByte(f, off); }});
  }
  for (uint64_t len : {uint64_t{0}, n / 2, n - 2, n - 1}) {
    out.push_back({"truncate to " + std::to_string(len) + " of " + std::to_string(n),
                   [len](const fs::path& f) { fs::resize_file(f, len); },
                   is_manifest && len == n - 1});
  }
  out.push_back({"delete", [](const fs::path& f) { fs::remove(f); }});
  out.push_back({"append garbage", [](const fs::path& f) { AppendBytes(f, "garbage\xff{}\n"); }});
  return out;
}

// Re-writes a checkpoint's manifest after `edit`, with a valid checksum, so
// that only the reader's own checks stand between the edit and a restore.
void RewriteManifest(const fs::path& checkpoint_dir, const std::function<void(json&)>& edit) {
  const fs::path file = checkpoint_dir / kManifestFile;
  json manifest = json::parse(ReadFileToString(file.string()));
  edit(manifest);
  manifest["checksum"] = internal::ManifestChecksum(manifest);
  WriteBytes(file.string(), manifest.dump(2) + "\n");
}

// A manifest edit that claims absurd sizes.
struct AbsurdCase {
  std::string name;
  std::function<void(json&)> edit;
};

// Parameters: the world size, and whether the checkpoints were saved
// asynchronously (what is on disk must be the same either way).
class DamageTest : public ::testing::TestWithParam<std::tuple<int, bool>> {
 protected:
  static int World() { return std::get<0>(GetParam()); }
  static SaveSetup Saving() { return {.world = World(), .async = std::get<1>(GetParam())}; }

  // For each case: ReadCheckpoint of the edited B is DataLoss, quickly,
  // without an allocation above kAllocationLimit, and restore falls back to A.
  void ExpectDataLossWithoutAllocating(const std::vector<AbsurdCase>& cases);

  // A pristine directory: A, then B, saved by World() ranks.
  void SetUp() override {
    pristine_ = fs::path(base_.path()) / "pristine";
    fs::create_directory(pristine_);
    for (const State* s : {&StateA(), &StateB()}) {
      for (const Status& st : SaveOnRanks(Saving(), pristine_.string(), Env::Default(), *s)) {
        ASSERT_OK(st);
      }
    }
    ASSERT_TRUE(fs::exists(pristine_ / "LATEST"));
  }

  fs::path Fresh() {
    const fs::path d = fs::path(base_.path()) / ("case-" + std::to_string(cases_++));
    CopyTree(pristine_, d);
    return d;
  }

  TempDir base_;
  fs::path pristine_;
  int cases_ = 0;
};

TEST_P(DamageTest, NewestDamagedFallsBackToPreviousLatestDoesNotMatter) {
  // B's files by name, and LATEST.
  std::vector<std::string> victims;
  for (const auto& e : fs::directory_iterator(pristine_ / CkptName(StateB()))) {
    victims.push_back(CkptName(StateB()) + "/" + e.path().filename().string());
  }
  ASSERT_EQ(victims.size(), static_cast<size_t>(1 + World()));  // manifest + one shard each
  victims.push_back("LATEST");
  int cases = 0;
  for (const std::string& victim : victims) {
    const bool is_shard = victim.ends_with(".bin");
    const bool is_latest = victim == "LATEST";
    const bool is_manifest = victim.ends_with("MANIFEST.json");
    for (const Damage& damage : DamagesFor(pristine_ / victim, is_shard, is_manifest)) {
      SCOPED_TRACE(victim + ": " + damage.name);
      const fs::path d = Fresh();
      damage.apply(d / victim);
      const Restored r = RestoreFresh(d.string());
      ASSERT_OK(r.status);
      ASSERT_TRUE(r.state.has_value()) << "a fresh start, with A on disk";
      EXPECT_EQ(Which(*r.state, StateA(), StateB()), is_latest || damage.harmless ? "new" : "old");
      fs::remove_all(d);
      ++cases;
    }
  }
  // LATEST naming the older or a missing checkpoint is only a wrong hint.
  for (const std::string& text : {CkptName(StateA()) + "\n", std::string("ckpt-999\n")}) {
    SCOPED_TRACE("LATEST says " + text);
    const fs::path d = Fresh();
    WriteBytes((d / "LATEST").string(), text);
    const Restored r = RestoreFresh(d.string());
    ASSERT_OK(r.status);
    ASSERT_TRUE(r.state.has_value());
    EXPECT_EQ(Which(*r.state, StateA(), StateB()), "new");
  }
  std::printf("%d damaged copies restored as expected\n", cases);
}

// Reading into live state: a checkpoint whose last shard is damaged leaves
// the destination untouched (restore then falls back, and a run told to
// start fresh starts from its own state, not a mix); an intact one fills it
// with exactly what a plain read returns.
TEST_P(DamageTest, ReadingIntoLiveStateWritesNothingUntilAllIsVerified) {
  const fs::path d = Fresh();
  const fs::path b = d / CkptName(StateB());
  auto plain = ReadCheckpoint(Env::Default(), b.string());
  ASSERT_OK(plain.status());
  std::map<std::string, std::vector<float>> storage;
  ReadTargets into;
  for (const auto& [name, floats] : plain->blob_floats) {
    storage[name].assign(floats, 42.0f);
    into.live.emplace(name, std::as_writable_bytes(std::span(storage[name])));
  }
  const std::string last =
      "shard-" + std::to_string(World() - 1) + "-of-" + std::to_string(World()) + ".bin";
  const std::string pristine_last = ReadFileToString((b / last).string());
  FlipByte(b / last, fs::file_size(b / last) - 5);  // inside the last slice's floats
  auto damaged = ReadCheckpoint(Env::Default(), b.string(), &into);
  ASSERT_FALSE(damaged.ok());
  EXPECT_EQ(damaged.status().code(), StatusCode::kDataLoss) << damaged.status().ToString();
  for (const auto& [name, values] : storage) {
    for (float v : values) ASSERT_EQ(v, 42.0f) << name << " was written by a damaged checkpoint";
  }
  WriteBytes((b / last).string(), pristine_last);
  auto read = ReadCheckpoint(Env::Default(), b.string(), &into);
  ASSERT_OK(read.status());
  EXPECT_TRUE(read->blobs.empty());
  EXPECT_EQ(read->values, plain->values);
  for (const auto& [name, values] : storage) EXPECT_EQ(values, plain->blobs.at(name)) << name;
  // Destinations that are not the checkpoint's blobs are refused up front.
  storage.begin()->second.push_back(0.0f);
  into.live.at(storage.begin()->first) = std::as_writable_bytes(std::span(storage.begin()->second));
  auto wrong = ReadCheckpoint(Env::Default(), b.string(), &into);
  EXPECT_EQ(wrong.status().code(), StatusCode::kFailedPrecondition) << wrong.status().ToString();
}

// Both damaged: DataLoss naming the directory, on every rank; never a fresh
// start, never a crash.
TEST_P(DamageTest, BothDamagedIsDataLossNamingTheDirectory) {
  const std::string shard0 = "shard-0-of-" + std::to_string(World()) + ".bin";
  struct Case {
    std::string name;
    std::function<void(const fs::path&)> damage_a, damage_b;
  };
  const std::vector<Case> cases = {
      {"shards flipped", [&](const fs::path& a) { FlipByte(a / shard0, 100); },
       [&](const fs::path& b) { FlipByte(b / shard0, 7); }},
      {"manifest truncated, shard deleted",
       [](const fs::path& a) { fs::resize_file(a / "MANIFEST.json", 10); },
       [&](const fs::path& b) { fs::remove(b / shard0); }},
      {"garbage appended to both manifests",
       [](const fs::path& a) { AppendBytes(a / "MANIFEST.json", "x"); },
       [](const fs::path& b) { AppendBytes(b / "MANIFEST.json", "{}"); }},
      {"shards truncated to 0", [&](const fs::path& a) { fs::resize_file(a / shard0, 0); },
       [&](const fs::path& b) { fs::resize_file(b / shard0, 0); }},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path d = Fresh();
    c.damage_a(d / CkptName(StateA()));
    c.damage_b(d / CkptName(StateB()));
    std::vector<Status> statuses(static_cast<size_t>(World()));
    RunInProcessRanks(World(), [&](Communicator& comm) {
      FreshState fresh;
      CheckpointManager m(&fresh.checkpoint, &comm, {.directory = d.string()});
      auto r = m.RestoreLatest();
      statuses[static_cast<size_t>(comm.rank())] =
          r.ok() ? (r->has_value() ? Status::Ok() : NotFoundError("fresh start")) : r.status();
    });
    for (const Status& s : statuses) {
      EXPECT_EQ(s.code(), StatusCode::kDataLoss) << s.ToString();
      EXPECT_NE(s.message().find(d.string()), std::string::npos) << s.ToString();
      EXPECT_EQ(s.message(), statuses[0].message());
    }
  }
}

// A manifest with a valid checksum that names a file outside the checkpoint
// is DataLoss, even when that file holds exactly the bytes it claims.
TEST_P(DamageTest, ManifestCannotNameAFileOutsideTheCheckpoint) {
  const std::string shard0 = "shard-0-of-" + std::to_string(World()) + ".bin";
  for (const std::string& target :
       {std::string("../outside.bin"), std::string("/etc/passwd"),
        "../" + CkptName(StateA()) + "/" + shard0, std::string("sub/") + shard0}) {
    SCOPED_TRACE(target);
    const fs::path d = Fresh();
    const fs::path b = d / CkptName(StateB());
    // Real bytes where the name leads (B's shard unless something is there
    // already), and a manifest that records their size and hash.
    const fs::path lands_on = target.starts_with("/") ? fs::path(target) : b / target;
    if (!fs::exists(lands_on)) {
      fs::create_directories(lands_on.parent_path());
      fs::copy_file(b / shard0, lands_on);
    }
    const std::string bytes = ReadFileToString(lands_on.string());
    RewriteManifest(b, [&](json& m) {
      for (json& s : m["shards"]) {
        if (s["file"] == shard0) {
          s["file"] = target;
          s["bytes"] = bytes.size();
          s["xxh3"] = HexU64(internal::ShardChecksum(bytes));
        }
      }
    });
    auto read = ReadCheckpoint(Env::Default(), b.string());
    ASSERT_FALSE(read.ok()) << "read a shard through " << target;
    EXPECT_EQ(read.status().code(), StatusCode::kDataLoss) << read.status().ToString();
    const Restored r = RestoreFresh(d.string());
    ASSERT_OK(r.status);
    ASSERT_TRUE(r.state.has_value());
    EXPECT_EQ(Which(*r.state, StateA(), StateB()), "old");
  }
}

// Checkpoints of format version 1 (the XXH3 of each whole shard file, not
// of its chunks' digests) still restore; a version-1 manifest with a
// version-2 checksum is damage.
TEST_P(DamageTest, AVersionOneCheckpointStillRestores) {
  for (const bool old_checksum : {true, false}) {
    SCOPED_TRACE(old_checksum ? "version 1" : "version 1 with a version-2 checksum");
    const fs::path d = Fresh();
    const fs::path b = d / CkptName(StateB());
    RewriteManifest(b, [&](json& m) {
      m["format_version"] = 1;
      for (json& s : m["shards"]) {
        const fs::path shard = b / s["file"].get<std::string>();
        std::string bytes = ReadFileToString(shard.string());
        const uint32_t version = 1;
        std::memcpy(bytes.data() + 8, &version, sizeof version);
        WriteBytes(shard.string(), bytes);
        s["xxh3"] = HexU64(internal::ShardChecksum(bytes, old_checksum ? 1 : 2));
      }
    });
    const Restored r = RestoreFresh(d.string());
    ASSERT_OK(r.status);
    ASSERT_TRUE(r.state.has_value());
    EXPECT_EQ(Which(*r.state, StateA(), StateB()), old_checksum ? "new" : "old");
  }
}

// A manifest with a valid checksum that claims absurd sizes: DataLoss,
// quickly, without allocating for the claim.
TEST_P(DamageTest, AbsurdBlobSizesInAValidManifestAreDataLoss) {
  const std::vector<AbsurdCase> cases = {
      {"1e15 floats in a blob",
       [](json& m) { m["blobs"][0]["floats"] = uint64_t{1'000'000'000'000'000}; }},
      {"blob sizes that overflow when summed",
       [](json& m) {
         m["blobs"][0]["floats"] = ~uint64_t{0};
         m["blobs"][1]["floats"] = uint64_t{2};
       }},
      {"shard sizes that overflow when summed",
       [](json& m) {
         m["shards"][0]["bytes"] = ~uint64_t{0};
         m["shards"].push_back(m["shards"][0]);
         m["shards"][1]["bytes"] = uint64_t{2};
       }},
  };
  ExpectDataLossWithoutAllocating(cases);
}

// The shard sizes in the manifest are claims too: they must be checked
// against the files before blobs of the claimed size are allocated.
TEST_P(DamageTest, ShardSizeClaimsAreCheckedBeforeAllocating) {
  const std::vector<AbsurdCase> cases = {
      {"1e15 floats in a blob and shards claiming 4e15 bytes",
       [](json& m) {
         m["blobs"][0]["floats"] = uint64_t{1'000'000'000'000'000};
         m["shards"][0]["bytes"] = uint64_t{4'000'000'100'000'000};
       }},
      {"1e9 floats in a blob and shards claiming 4e9 bytes",
       [](json& m) {
         m["blobs"][0]["floats"] = uint64_t{1'000'000'000};
         m["shards"][0]["bytes"] = uint64_t{4'000'100'000};
       }},
  };
  ExpectDataLossWithoutAllocating(cases);
}

void DamageTest::ExpectDataLossWithoutAllocating(const std::vector<AbsurdCase>& cases) {
  for (const AbsurdCase& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path d = Fresh();
    const fs::path b = d / CkptName(StateB());
    RewriteManifest(b, c.edit);
    g_refused_allocation = 0;
    const auto start = std::chrono::steady_clock::now();
    try {
      auto read = ReadCheckpoint(Env::Default(), b.string());
      ASSERT_FALSE(read.ok());
      EXPECT_EQ(read.status().code(), StatusCode::kDataLoss) << read.status().ToString();
      const Restored r = RestoreFresh(d.string());
      ASSERT_OK(r.status);
      ASSERT_TRUE(r.state.has_value());
      EXPECT_EQ(Which(*r.state, StateA(), StateB()), "old");
    } catch (const std::bad_alloc&) {
      ADD_FAILURE() << "the reader tried to allocate " << g_refused_allocation.load()
                    << " bytes for what the manifest claims (refused by this test; a real run "
                       "would get std::bad_alloc or an OOM kill)";
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  }
}

// A step saved again after its checkpoint was found damaged (the run fell
// back to the previous one and trained on): the new save must replace the
// damaged one, not report OK and keep it.
TEST_P(DamageTest, SavingADamagedStepAgainReplacesIt) {
  const fs::path d = Fresh();
  FlipByte(d / CkptName(StateB()) / "MANIFEST.json", 20);
  Restored r = RestoreFresh(d.string());
  ASSERT_OK(r.status);
  ASSERT_TRUE(r.state.has_value());
  ASSERT_EQ(Which(*r.state, StateA(), StateB()), "old");
  for (const Status& s : SaveOnRanks(Saving(), d.string(), Env::Default(), StateB())) ASSERT_OK(s);
  r = RestoreFresh(d.string());
  ASSERT_OK(r.status);
  ASSERT_TRUE(r.state.has_value());
  EXPECT_EQ(Which(*r.state, StateA(), StateB()), "new")
      << "Save() returned OK on every rank, yet the damaged " << CkptName(StateB())
      << " is still there and B is lost";
}

// Lengths inside a shard's archive (the archive's signature string, a blob
// name) are read from the file: they must be bounded by the bytes that are
// left before anything is allocated for them. (shard_fuzzer found the first.)
TEST(ShardDecodeTest, LengthFieldsAreBoundedBeforeAllocating) {
  std::vector<float> values(10, 1.5f);
  internal::ShardToWrite w;
  w.step = 8;
  w.slices.push_back(
      {"params", values.size(), 0, std::as_bytes(std::span<const float>(values)), {}});
  const std::string good = internal::EncodeShard(w);
  const std::map<std::string, uint64_t> blobs = {{"params", values.size()}};
  ASSERT_OK(internal::DecodeShard(good, blobs));
  auto u64_at = [&](size_t offset) {
    uint64_t v;
    std::memcpy(&v, good.data() + offset, sizeof v);
    return v;
  };
  auto patched = [&](size_t offset, uint64_t v) {
    std::string bytes = good;
    std::memcpy(bytes.data() + offset, &v, sizeof v);
    return bytes;
  };
  auto patched32 = [&](size_t offset, uint32_t v) {
    std::string bytes = good;
    std::memcpy(bytes.data() + offset, &v, sizeof v);
    return bytes;
  };
  // The payload has no Boost archive header (no signature string to size);
  // names are a uint32 length and the bytes; a slice's name is followed by
  // its total, offset and float count (uint64 each).
  const size_t name = good.find("params");
  ASSERT_NE(name, std::string::npos);
  uint32_t name_length;
  std::memcpy(&name_length, good.data() + name - 4, sizeof name_length);
  ASSERT_EQ(name_length, 6u);
  const size_t count = name + 6 + 16;
  ASSERT_EQ(u64_at(count), values.size());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"blob name 4 GiB long", patched32(name - 4, 0xFFFFFFFFu)},
      {"blob name just over the limit", patched32(name - 4, 4097)},
      {"slice of 2^40 floats", patched(count, uint64_t{1} << 40)},
  };
  for (const auto& [what, bytes] : cases) {
    SCOPED_TRACE(what);
    g_refused_allocation = 0;
    const auto r = internal::DecodeShard(bytes, blobs);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().ToString();
    EXPECT_EQ(g_refused_allocation.load(), 0u)
        << "DecodeShard tried to allocate " << g_refused_allocation.load()
        << " bytes for a length read from a " << bytes.size() << "-byte shard";
  }
}

INSTANTIATE_TEST_SUITE_P(Worlds, DamageTest,
                         ::testing::Combine(::testing::Values(1, 2), ::testing::Bool()),
                         [](const auto& info) {
                           return "W" + std::to_string(std::get<0>(info.param)) +
                                  (std::get<1>(info.param) ? "_Async" : "_Sync");
                         });

}  // namespace
}  // namespace holdfast
