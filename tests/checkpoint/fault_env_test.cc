// Tests of the test Env itself (tests/testutil/fault_env.h): operation
// counting, injected failures and crashes, and the power-cut model.
#include "tests/testutil/fault_env.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "checkpoint/env.h"
#include "core/status.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

using testing::FaultInjectionEnv;

std::span<const char> Bytes(std::string_view s) { return {s.data(), s.size()}; }

// Creates `path` through `env` holding `content`; syncs the data if `sync`.
// Does not sync the directory.
void Write(Env* env, const std::string& path, std::string_view content, bool sync) {
  StatusOr<std::unique_ptr<WritableFile>> file = env->NewWritableFile(path);
  ASSERT_OK(file);
  ASSERT_OK((*file)->Append(Bytes(content)));
  if (sync) ASSERT_OK((*file)->Sync());
  ASSERT_OK((*file)->Close());
}

// "t<t>-<i>", built by appending: GCC 12 warns falsely (-Wrestrict, GCC bug
// 105329) on "literal" + std::string temporaries here.
std::string ThreadFileName(int t, int i) {
  std::string name = "t";
  name += std::to_string(t);
  name += '-';
  name += std::to_string(i);
  return name;
}

bool IsFile(const std::string& path) { return std::filesystem::is_regular_file(path); }

class FaultInjectionEnvTest : public ::testing::Test {
 protected:
  TempDir dir_;
  FaultInjectionEnv env_;
};

TEST_F(FaultInjectionEnvTest, CountsEveryEnvCallAndEveryFileCall) {
  EXPECT_EQ(env_.operations(), 0);
  const std::string f = dir_.File("f");
  StatusOr<std::unique_ptr<WritableFile>> file = env_.NewWritableFile(f);  // 1
  ASSERT_OK(file);
  ASSERT_OK((*file)->Append(Bytes("ab")));  // 2
  ASSERT_OK((*file)->Append(Bytes("c")));   // 3
  ASSERT_OK((*file)->Sync());               // 4
  ASSERT_OK((*file)->Close());              // 5
  file->reset();                            // the destructor is not an operation
  EXPECT_EQ(env_.operations(), 5);
  EXPECT_TRUE(env_.Exists(f));                              // 6
  EXPECT_EQ(env_.FileSize(f).value(), 3u);                  // 7
  EXPECT_EQ(env_.ReadFile(f, 100).value(), "abc");          // 8
  EXPECT_EQ(env_.ListDir(dir_.path()).value().size(), 1u);  // 9
  ASSERT_OK(env_.CreateDir(dir_.File("d")));                // 10
  ASSERT_OK(env_.Rename(f, dir_.File("g")));                // 11
  ASSERT_OK(env_.SyncDir(dir_.path()));                     // 12
  ASSERT_OK(env_.RemoveFile(dir_.File("g")));               // 13
  ASSERT_OK(env_.RemoveDir(dir_.File("d")));                // 14
  EXPECT_FALSE(env_.Exists(f));                             // 15
  EXPECT_FALSE(env_.FileSize(f).ok());                      // 16: failed calls count too
  EXPECT_EQ(env_.operations(), 16);
  // Its own bookkeeping on the base Env is not counted.
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(env_.operations(), 16);
  EXPECT_EQ(env_.faults_injected(), 0);
}

TEST_F(FaultInjectionEnvTest, FailAtFailsExactlyThatOperationAndDoesNothing) {
  const std::string d1 = dir_.File("d1"), d2 = dir_.File("d2"), d3 = dir_.File("d3");
  env_.FailAt(1, ENOSPC);
  ASSERT_OK(env_.CreateDir(d1));
  const Status s = env_.CreateDir(d2);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_NE(s.message().find(d2), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("injected"), std::string::npos) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(d2));
  ASSERT_OK(env_.CreateDir(d3));
  ASSERT_OK(env_.CreateDir(d2));  // the fault was a one-off
  EXPECT_EQ(env_.faults_injected(), 1);
  EXPECT_EQ(env_.last_fault(), "CreateDir " + d2);
}

TEST_F(FaultInjectionEnvTest, FailAtMapsTheErrno) {
  const std::string f = dir_.File("f");
  WriteBytes(f, "x");
  env_.FailAt(0, EIO);
  EXPECT_EQ(env_.ReadFile(f, 10).status().code(), StatusCode::kInternal);
  env_.FailAt(0, EACCES);
  EXPECT_EQ(env_.ReadFile(f, 10).status().code(), StatusCode::kPermissionDenied);
  env_.FailAt(0, ENOENT);
  EXPECT_FALSE(env_.Exists(f));  // Exists can only say false
  EXPECT_TRUE(env_.Exists(f));
  EXPECT_EQ(env_.ReadFile(f, 10).value(), "x");
}

TEST_F(FaultInjectionEnvTest, FailedAppendWritesNothingAndTheNextOneWorks) {
  const std::string f = dir_.File("f");
  StatusOr<std::unique_ptr<WritableFile>> file = env_.NewWritableFile(f);
  ASSERT_OK(file);
  env_.FailAt(0, ENOSPC);
  EXPECT_EQ((*file)->Append(Bytes("lost")).code(), StatusCode::kResourceExhausted);
  ASSERT_OK((*file)->Append(Bytes("kept")));
  ASSERT_OK((*file)->Close());
  EXPECT_EQ(ReadFileToString(f), "kept");
}

TEST_F(FaultInjectionEnvTest, FailedRenameAndRemoveDoNothing) {
  const std::string a = dir_.File("a"), b = dir_.File("b");
  WriteBytes(a, "A");
  WriteBytes(b, "B");
  env_.FailAt(0, EIO);
  EXPECT_FALSE(env_.Rename(a, b).ok());
  env_.FailAt(0, EIO);
  EXPECT_FALSE(env_.RemoveFile(a).ok());
  EXPECT_EQ(ReadFileToString(a), "A");
  EXPECT_EQ(ReadFileToString(b), "B");
}

TEST_F(FaultInjectionEnvTest, FailFromKeepsFailing) {
  env_.FailFrom(2, EIO);
  ASSERT_OK(env_.CreateDir(dir_.File("0")));
  ASSERT_OK(env_.CreateDir(dir_.File("1")));
  for (int i = 2; i < 6; ++i) {
    EXPECT_EQ(env_.CreateDir(dir_.File(std::to_string(i))).code(), StatusCode::kInternal) << i;
  }
  EXPECT_FALSE(env_.ListDir(dir_.path()).ok());
  EXPECT_EQ(env_.faults_injected(), 5);
  env_.ClearFaults();
  EXPECT_EQ(env_.ListDir(dir_.path()).value().size(), 2u);
}

TEST_F(FaultInjectionEnvTest, FailFromWithAMaskFailsOnlyThoseOperations) {
  const std::string f = dir_.File("f");
  WriteBytes(f, "data");
  env_.FailFrom(0, ENOSPC, FaultInjectionEnv::kDiskFullOps);
  EXPECT_EQ(env_.NewWritableFile(dir_.File("g")).status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(env_.CreateDir(dir_.File("d")).code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(env_.ReadFile(f, 10).value(), "data");  // a full disk still reads
  EXPECT_TRUE(env_.Exists(f));
  ASSERT_OK(env_.RemoveFile(f));  // and frees space
  EXPECT_FALSE(std::filesystem::exists(dir_.File("g")));
  EXPECT_FALSE(std::filesystem::exists(dir_.File("d")));
}

TEST_F(FaultInjectionEnvTest, CrashAtFailsThatAndEveryLaterOperation) {
  const std::string f = dir_.File("f");
  StatusOr<std::unique_ptr<WritableFile>> file = env_.NewWritableFile(f);
  ASSERT_OK(file);
  env_.CrashAt(1);
  ASSERT_OK((*file)->Append(Bytes("before")));
  EXPECT_FALSE(env_.crashed());
  Status s = (*file)->Append(Bytes("after"));
  EXPECT_EQ(s.code(), StatusCode::kAborted);
  EXPECT_NE(s.message().find("simulated crash"), std::string::npos) << s.ToString();
  EXPECT_TRUE(env_.crashed());
  EXPECT_EQ((*file)->Sync().code(), StatusCode::kAborted);
  EXPECT_EQ((*file)->Close().code(), StatusCode::kAborted);
  EXPECT_EQ(env_.CreateDir(dir_.File("d")).code(), StatusCode::kAborted);
  EXPECT_EQ(env_.Rename(f, dir_.File("g")).code(), StatusCode::kAborted);
  EXPECT_EQ(env_.ReadFile(f, 100).status().code(), StatusCode::kAborted);
  EXPECT_FALSE(env_.Exists(f));
  EXPECT_EQ(env_.faults_injected(), 1);  // one crash, however many calls see it
  EXPECT_EQ(env_.last_fault(), "Append " + f);
  file->reset();
  // Nothing was done after the crash point.
  EXPECT_EQ(ReadFileToString(f), "before");
  EXPECT_FALSE(std::filesystem::exists(dir_.File("d")));
  EXPECT_FALSE(std::filesystem::exists(dir_.File("g")));
  env_.ClearFaults();
  EXPECT_FALSE(env_.crashed());
  EXPECT_TRUE(env_.Exists(f));
}

// ---------------------------------------------------------------------------
// PowerCut.

using FaultInjectionEnvPowerCutTest = FaultInjectionEnvTest;

TEST_F(FaultInjectionEnvPowerCutTest, DropsBytesAppendedAfterTheLastSync) {
  const std::string f = dir_.File("f");
  StatusOr<std::unique_ptr<WritableFile>> file = env_.NewWritableFile(f);
  ASSERT_OK(file);
  ASSERT_OK((*file)->Append(Bytes("synced")));
  ASSERT_OK((*file)->Sync());
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK((*file)->Append(Bytes("+unsynced")));
  EXPECT_EQ(ReadFileToString(f), "synced+unsynced");
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(f), "synced");
  // A file opened before the cut is dead.
  EXPECT_EQ((*file)->Append(Bytes("zombie")).code(), StatusCode::kAborted);
  EXPECT_EQ(ReadFileToString(f), "synced");
}

TEST_F(FaultInjectionEnvPowerCutTest, AFailedSyncDoesNotMakeDataDurable) {
  const std::string f = dir_.File("f");
  StatusOr<std::unique_ptr<WritableFile>> file = env_.NewWritableFile(f);
  ASSERT_OK(file);
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK((*file)->Append(Bytes("a")));
  ASSERT_OK((*file)->Sync());
  ASSERT_OK((*file)->Append(Bytes("b")));
  env_.FailAt(0, EIO);
  EXPECT_FALSE((*file)->Sync().ok());
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(f), "a");
}

TEST_F(FaultInjectionEnvPowerCutTest, NeverSyncedFileBecomesEmpty) {
  const std::string f = dir_.File("f");
  Write(&env_, f, "data", /*sync=*/false);
  ASSERT_OK(env_.SyncDir(dir_.path()));  // the name is durable, the data is not
  ASSERT_OK(env_.PowerCut());
  ASSERT_TRUE(IsFile(f));
  EXPECT_EQ(ReadFileToString(f), "");
}

TEST_F(FaultInjectionEnvPowerCutTest, TruncatingAnOldFileWithoutSyncLeavesItEmpty) {
  const std::string f = dir_.File("f");
  WriteBytes(f, "old");  // not written through the Env: taken as durable
  Write(&env_, f, "new", /*sync=*/false);
  ASSERT_OK(env_.PowerCut());
  ASSERT_TRUE(IsFile(f));  // an existing name was not a creation
  EXPECT_EQ(ReadFileToString(f), "");
}

TEST_F(FaultInjectionEnvPowerCutTest, DeletesAFileCreatedWithoutDirSync) {
  const std::string f = dir_.File("f");
  Write(&env_, f, "synced data", /*sync=*/true);
  ASSERT_OK(env_.PowerCut());
  EXPECT_FALSE(std::filesystem::exists(f));
}

TEST_F(FaultInjectionEnvPowerCutTest, KeepsSyncedDataUnderASyncedName) {
  const std::string f = dir_.File("f");
  Write(&env_, f, "durable", /*sync=*/true);
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(f), "durable");
}

TEST_F(FaultInjectionEnvPowerCutTest, SyncOfAnotherDirectoryDoesNotHelp) {
  const std::string sub = dir_.File("sub");
  std::filesystem::create_directory(sub);
  const std::string f = dir_.File("f");
  Write(&env_, f, "data", /*sync=*/true);
  ASSERT_OK(env_.SyncDir(sub));
  ASSERT_OK(env_.PowerCut());
  EXPECT_FALSE(std::filesystem::exists(f));
}

TEST_F(FaultInjectionEnvPowerCutTest, UndoesAnUnsyncedRenameAndRestoresTheReplacedFile) {
  const std::string x = dir_.File("x"), tmp = dir_.File("x.tmp");
  WriteBytes(x, "old");
  Write(&env_, tmp, "new", /*sync=*/true);
  ASSERT_OK(env_.SyncDir(dir_.path()));  // x.tmp is durable
  ASSERT_OK(env_.Rename(tmp, x));
  EXPECT_EQ(ReadFileToString(x), "new");
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(x), "old");
  EXPECT_EQ(ReadFileToString(tmp), "new");
}

TEST_F(FaultInjectionEnvPowerCutTest, RestoresOnlyTheDurablePartOfAReplacedFile) {
  const std::string x = dir_.File("x"), y = dir_.File("y");
  StatusOr<std::unique_ptr<WritableFile>> file = env_.NewWritableFile(x);
  ASSERT_OK(file);
  ASSERT_OK((*file)->Append(Bytes("dur")));
  ASSERT_OK((*file)->Sync());
  ASSERT_OK((*file)->Append(Bytes("able")));
  ASSERT_OK((*file)->Close());
  WriteBytes(y, "y");
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK(env_.Rename(y, x));
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(x), "dur");
  EXPECT_EQ(ReadFileToString(y), "y");
}

TEST_F(FaultInjectionEnvPowerCutTest, UnsyncedRenameOfAnUnsyncedFileLeavesNeither) {
  // AtomicWriteFile's steps without the final SyncDir.
  const std::string x = dir_.File("x"), tmp = dir_.File("x.tmp");
  WriteBytes(x, "old");
  Write(&env_, tmp, "new", /*sync=*/true);
  ASSERT_OK(env_.Rename(tmp, x));
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(x), "old");
  EXPECT_FALSE(std::filesystem::exists(tmp));
}

TEST_F(FaultInjectionEnvPowerCutTest, KeepsASyncedRename) {
  const std::string x = dir_.File("x"), tmp = dir_.File("x.tmp");
  WriteBytes(x, "old");
  Write(&env_, tmp, "new", /*sync=*/true);
  ASSERT_OK(env_.Rename(tmp, x));
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(x), "new");
  EXPECT_FALSE(std::filesystem::exists(tmp));
}

TEST_F(FaultInjectionEnvPowerCutTest, RenameAcrossDirectoriesNeedsBothSynced) {
  const std::string a = dir_.File("a"), b = dir_.File("b");
  std::filesystem::create_directory(a);
  std::filesystem::create_directory(b);
  WriteBytes(a + "/f", "f");
  ASSERT_OK(env_.Rename(a + "/f", b + "/f"));
  ASSERT_OK(env_.SyncDir(b));
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(a + "/f"), "f");
  EXPECT_FALSE(std::filesystem::exists(b + "/f"));

  ASSERT_OK(env_.Rename(a + "/f", b + "/f"));
  ASSERT_OK(env_.SyncDir(b));
  ASSERT_OK(env_.SyncDir(a));
  ASSERT_OK(env_.PowerCut());
  EXPECT_FALSE(std::filesystem::exists(a + "/f"));
  EXPECT_EQ(ReadFileToString(b + "/f"), "f");
}

TEST_F(FaultInjectionEnvPowerCutTest, UndoesAnUnsyncedRemoval) {
  const std::string kept = dir_.File("kept"), gone = dir_.File("gone");
  WriteBytes(kept, "k");
  WriteBytes(gone, "g");
  ASSERT_OK(env_.RemoveFile(kept));
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(kept), "k");
  ASSERT_OK(env_.RemoveFile(gone));
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK(env_.PowerCut());
  EXPECT_FALSE(std::filesystem::exists(gone));
}

TEST_F(FaultInjectionEnvPowerCutTest, UndoesAnUnsyncedDirectoryCreationWithItsContents) {
  const std::string d = dir_.File("d");
  ASSERT_OK(env_.CreateDir(d));
  Write(&env_, d + "/f", "data", /*sync=*/true);
  ASSERT_OK(env_.SyncDir(d));  // f is durable in d, but d is not durable in dir_
  ASSERT_OK(env_.PowerCut());
  EXPECT_FALSE(std::filesystem::exists(d));

  ASSERT_OK(env_.CreateDir(d));
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK(env_.PowerCut());
  EXPECT_TRUE(std::filesystem::is_directory(d));
}

TEST_F(FaultInjectionEnvPowerCutTest, UndoesAnUnsyncedRemovalOfATree) {
  const std::string d = dir_.File("d");
  std::filesystem::create_directories(d + "/sub");
  WriteBytes(d + "/sub/f", "f");
  WriteBytes(d + "/g", "g");
  ASSERT_OK(RemoveTree(&env_, d));
  EXPECT_FALSE(std::filesystem::exists(d));
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(d + "/sub/f"), "f");
  EXPECT_EQ(ReadFileToString(d + "/g"), "g");
}

// The two-phase commit's shape: fill a prepare directory, sync it, rename it
// to its final name, sync the parent.
TEST_F(FaultInjectionEnvPowerCutTest, RenamedDirectoryCarriesItsPendingState) {
  const std::string prep = dir_.File(".ckpt-1.tmp"), final_dir = dir_.File("ckpt-1");
  ASSERT_OK(env_.CreateDir(prep));
  ASSERT_OK(env_.SyncDir(dir_.path()));
  Write(&env_, prep + "/shard", "shard", /*sync=*/true);
  ASSERT_OK(env_.Rename(prep, final_dir));
  // The shard's creation is now pending on ckpt-1, not on .ckpt-1.tmp.
  ASSERT_OK(env_.SyncDir(final_dir));
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK(env_.PowerCut());
  EXPECT_FALSE(std::filesystem::exists(prep));
  EXPECT_EQ(ReadFileToString(final_dir + "/shard"), "shard");
}

TEST_F(FaultInjectionEnvPowerCutTest, UnsyncedDirectoryRenameIsUndone) {
  const std::string prep = dir_.File(".ckpt-1.tmp"), final_dir = dir_.File("ckpt-1");
  ASSERT_OK(env_.CreateDir(prep));
  ASSERT_OK(env_.SyncDir(dir_.path()));
  Write(&env_, prep + "/shard", "shard+", /*sync=*/false);
  ASSERT_OK(env_.SyncDir(prep));
  ASSERT_OK(env_.Rename(prep, final_dir));
  ASSERT_OK(env_.PowerCut());
  EXPECT_FALSE(std::filesystem::exists(final_dir));
  // Data that was never synced is cut under the name it had at the cut.
  EXPECT_EQ(ReadFileToString(prep + "/shard"), "");
}

TEST_F(FaultInjectionEnvPowerCutTest, ResetsFaultsAndStartsAfresh) {
  const std::string f = dir_.File("f");
  env_.CrashAt(0);
  EXPECT_FALSE(env_.CreateDir(dir_.File("d")).ok());
  EXPECT_TRUE(env_.crashed());
  ASSERT_OK(env_.PowerCut());
  EXPECT_FALSE(env_.crashed());
  Write(&env_, f, "after", /*sync=*/true);
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK(env_.PowerCut());
  EXPECT_EQ(ReadFileToString(f), "after");
}

TEST_F(FaultInjectionEnvTest, IsSafeToShareBetweenThreads) {
  constexpr int kThreads = 4, kFiles = 25;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([this, t] {
      for (int i = 0; i < kFiles; ++i) {
        const std::string name = dir_.File(ThreadFileName(t, i));
        Write(&env_, name, name, /*sync=*/i % 2 == 0);
      }
    });
  }
  for (std::thread& t : threads) t.join();
  int64_t expected = 0;  // NewWritableFile, Append, Sync if synced, Close
  for (int i = 0; i < kFiles; ++i) expected += kThreads * (i % 2 == 0 ? 4 : 3);
  EXPECT_EQ(env_.operations(), expected);
  ASSERT_OK(env_.SyncDir(dir_.path()));
  ASSERT_OK(env_.PowerCut());
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kFiles; ++i) {
      const std::string name = dir_.File(ThreadFileName(t, i));
      EXPECT_EQ(ReadFileToString(name), i % 2 == 0 ? name : "") << name;
    }
  }
}

}  // namespace
}  // namespace holdfast
