// The checkpoint directory's names: made and parsed by one unit, and the one
// scan (ListCheckpoints) that restore, retention, DeleteAll and `holdfast
// ckpt` all use.
#include "checkpoint/names.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

namespace fs = std::filesystem;

TEST(CheckpointNamesTest, MadeNamesParseBack) {
  int64_t step = -1;
  EXPECT_EQ(CheckpointName(1200), "ckpt-1200");
  EXPECT_TRUE(ParseCheckpointName(CheckpointName(1200), &step));
  EXPECT_EQ(step, 1200);
  EXPECT_EQ(PrepareAreaName(7, "a3f"), ".ckpt-7.tmp-a3f");
  EXPECT_TRUE(ParsePrepareAreaName(PrepareAreaName(7, "a3f"), &step));
  EXPECT_EQ(step, 7);
  EXPECT_EQ(ShardFileName(1, 3), "shard-1-of-3.bin");
  EXPECT_TRUE(IsShardFileName(ShardFileName(1, 3)));
}

TEST(CheckpointNamesTest, OtherNamesDoNotParse) {
  for (const char* name : {"ckpt-", "ckpt-12a", "ckpt--1", "xckpt-1", "ckpt-1/", "LATEST",
                           "ckpt-1234567890123456789"}) {
    EXPECT_FALSE(ParseCheckpointName(name)) << name;
  }
  for (const char* name : {".ckpt-1.tmp-", ".ckpt-1.tmp-XY", "ckpt-1.tmp-ab", ".ckpt-1.tmp"}) {
    EXPECT_FALSE(ParsePrepareAreaName(name)) << name;
  }
  for (const char* name :
       {"shard-1-of-3", "../shard-1-of-3.bin", "shard-1-of-3.bin/x", "shard--of-.bin"}) {
    EXPECT_FALSE(IsShardFileName(name)) << name;
  }
}

TEST(CheckpointNamesTest, ListCheckpointsSortsByStepThenKind) {
  TempDir dir;
  const fs::path d = dir.path();
  for (const char* sub :
       {"ckpt-20", "ckpt-3", ".ckpt-20.tmp-ff", "ckpt-100", "other", ".ckpt-5.tmp-1"}) {
    fs::create_directory(d / sub);
  }
  std::ofstream(d / "ckpt-20" / kManifestFile) << "{}";
  std::ofstream(d / "ckpt-100" / kManifestFile) << "{}";
  std::ofstream(d / kLatestFile) << "ckpt-100\n";
  auto entries = ListCheckpoints(Env::Default(), d.string());
  ASSERT_OK(entries);
  std::vector<std::pair<std::string, DirectoryEntry::Kind>> got;
  for (const DirectoryEntry& e : *entries) {
    got.emplace_back(e.name, e.kind);
    EXPECT_EQ(e.path, (d / e.name).string());
  }
  const std::vector<std::pair<std::string, DirectoryEntry::Kind>> want = {
      {"ckpt-3", DirectoryEntry::kUncommitted},
      {".ckpt-5.tmp-1", DirectoryEntry::kPrepareArea},
      {"ckpt-20", DirectoryEntry::kCommitted},
      {".ckpt-20.tmp-ff", DirectoryEntry::kPrepareArea},
      {"ckpt-100", DirectoryEntry::kCommitted}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(ListCheckpoints(Env::Default(), (d / "missing").string()).status().code(),
            StatusCode::kNotFound);
}

}  // namespace
}  // namespace holdfast
