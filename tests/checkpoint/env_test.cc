// Tests of checkpoint/env.h: PosixEnv on a temporary directory, the path
// helpers, RemoveTree, and AtomicWriteFile under a failure or a crash at every
// one of its Env calls (with FaultInjectionEnv).
#include "checkpoint/env.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"
#include "tests/testutil/allocation_hook.h"
#include "tests/testutil/fault_env.h"
#include "tests/testutil/testutil.h"

namespace holdfast {
namespace {

using testing::FaultInjectionEnv;

constexpr uint64_t kMiB = uint64_t{1} << 20;

std::span<const char> Bytes(std::string_view s) { return {s.data(), s.size()}; }

bool Contains(const Status& s, const std::string& part) {
  return s.message().find(part) != std::string::npos;
}

class PosixEnvTest : public ::testing::Test {
 protected:
  Env* env_ = Env::Default();
  TempDir dir_;
};

TEST_F(PosixEnvTest, WriteSyncReadRoundTrip) {
  const std::string f = dir_.File("f.bin");
  std::string data;
  for (int i = 0; i < 100000; ++i) data.push_back(static_cast<char>(i * 7));  // NULs too
  StatusOr<std::unique_ptr<WritableFile>> file = env_->NewWritableFile(f);
  ASSERT_OK(file);
  ASSERT_OK((*file)->Append(Bytes(std::string_view(data).substr(0, 12345))));
  ASSERT_OK((*file)->Append(Bytes(std::string_view(data).substr(12345))));
  ASSERT_OK((*file)->Append(Bytes("")));
  ASSERT_OK((*file)->Sync());
  ASSERT_OK((*file)->Close());
  ASSERT_OK((*file)->Close());  // a second Close is harmless
  EXPECT_FALSE((*file)->Append(Bytes("late")).ok());
  StatusOr<std::string> back = env_->ReadFile(f, data.size());
  ASSERT_OK(back);
  EXPECT_TRUE(*back == data);
  EXPECT_EQ(env_->FileSize(f).value(), data.size());
  EXPECT_TRUE(env_->Exists(f));
}

// A direct (O_DIRECT) file gathers appends into 4 MiB aligned buffers and
// writes its tail through the page cache: every size around those edges,
// in uneven appends, must read back exactly; so must appends after a Sync,
// and the same on tmpfs, which refuses O_DIRECT (the buffered fallback).
TEST_F(PosixEnvTest, DirectWritableFileRoundTripsEverySizeAroundItsBlocks) {
  std::vector<std::string> dirs = {dir_.path()};
  std::optional<TempDir> shm;
  if (std::filesystem::is_directory("/dev/shm")) dirs.push_back(shm.emplace("/dev/shm").path());
  const std::vector<size_t> sizes = {
      0, 1, 4095, 4096, 4097, 4 * kMiB - 1, 4 * kMiB, 4 * kMiB + 1, 9 * kMiB + 5};
  std::string data;
  for (size_t i = 0; i < 9 * kMiB + 5; ++i) data.push_back(static_cast<char>(i * 131 + (i >> 12)));
  for (const std::string& dir : dirs) {
    for (size_t size : sizes) {
      SCOPED_TRACE(dir + ", " + std::to_string(size) + " bytes");
      const std::string f = JoinPath(dir, "direct.bin");
      StatusOr<std::unique_ptr<WritableFile>> file = env_->NewDirectWritableFile(f);
      ASSERT_OK(file);
      const std::string_view want = std::string_view(data).substr(0, size);
      for (size_t at = 0, piece = 1; at < size; at += piece, piece = piece * 3 + 1000) {
        ASSERT_OK((*file)->Append(Bytes(want.substr(at, piece))));
      }
      ASSERT_OK((*file)->Sync());
      ASSERT_OK((*file)->Append(Bytes("after sync")));
      ASSERT_OK((*file)->Sync());
      ASSERT_OK((*file)->Close());
      StatusOr<std::string> back = env_->ReadFile(f, size + 100);
      ASSERT_OK(back);
      EXPECT_TRUE(*back == std::string(want) + "after sync");
    }
  }
}

// Memory placed at the offset within a block where the file's end is goes
// to the device unstaged; memory placed anywhere else is staged. Either way
// the file holds exactly what was appended, whatever came before it.
TEST_F(PosixEnvTest, DirectWritableFileWritesPlacedMemoryAsItIs) {
  constexpr size_t kBlock = kDirectIoAlignment;
  constexpr size_t kLarge = 2 * kMiB + 3 * kBlock + 17;
  std::unique_ptr<char, decltype(&std::free)> memory(
      static_cast<char*>(std::aligned_alloc(kBlock, kLarge + 2 * kBlock)), &std::free);
  ASSERT_NE(memory, nullptr);
  for (size_t i = 0; i < kLarge + 2 * kBlock; ++i) memory.get()[i] = static_cast<char>(i * 7 + 3);
  for (size_t head : {size_t{0}, size_t{40}, kBlock - 1, kBlock, 3 * kBlock + 100, 5 * kMiB + 9}) {
    for (const bool placed : {true, false}) {
      SCOPED_TRACE(std::to_string(head) + " bytes before, " + (placed ? "placed" : "not placed"));
      const std::string before(head, 'h');
      const char* large = memory.get() + head % kBlock + (placed ? 0 : 1);
      const std::string f = dir_.File("placed.bin");
      StatusOr<std::unique_ptr<WritableFile>> file = env_->NewDirectWritableFile(f);
      ASSERT_OK(file);
      ASSERT_OK((*file)->Append(Bytes(before)));
      ASSERT_OK((*file)->Append({large, kLarge}));
      ASSERT_OK(
          (*file)->Append({large, kBlock + 1}));  // placed again only if head was whole blocks
      ASSERT_OK((*file)->Sync());
      ASSERT_OK((*file)->Close());
      StatusOr<std::string> back = env_->ReadFile(f, head + kLarge + kBlock + 1);
      ASSERT_OK(back);
      EXPECT_TRUE(*back == before + std::string(large, kLarge) + std::string(large, kBlock + 1));
    }
  }
}

TEST_F(PosixEnvTest, NewWritableFileTruncates) {
  const std::string f = dir_.File("f");
  WriteBytes(f, "a long old content");
  StatusOr<std::unique_ptr<WritableFile>> file = env_->NewWritableFile(f);
  ASSERT_OK(file);
  ASSERT_OK((*file)->Append(Bytes("new")));
  ASSERT_OK((*file)->Close());
  EXPECT_EQ(env_->ReadFile(f, 100).value(), "new");
}

TEST_F(PosixEnvTest, EmptyFileReads) {
  const std::string f = dir_.File("empty");
  WriteBytes(f, "");
  EXPECT_EQ(env_->ReadFile(f, 0).value(), "");
  EXPECT_EQ(env_->FileSize(f).value(), 0u);
}

TEST_F(PosixEnvTest, ReadFileBoundIsExact) {
  const std::string f = dir_.File("f");
  WriteBytes(f, "12345");
  EXPECT_EQ(env_->ReadFile(f, 5).value(), "12345");
  EXPECT_FALSE(env_->ReadFile(f, 4).ok());
}

TEST_F(PosixEnvTest, ReadFileRefusesAnOversizedFileBeforeAllocating) {
  const std::string f = dir_.File("sparse");
  const int fd = ::open(f.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::ftruncate(fd, 1024 * kMiB), 0) << std::strerror(errno);  // 1 GiB, no blocks
  ::close(fd);
  g_largest_allocation = 0;
  const StatusOr<std::string> read = env_->ReadFile(f, kMiB);
  const size_t largest = g_largest_allocation.load();
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), StatusCode::kDataLoss) << read.status().ToString();
  EXPECT_TRUE(Contains(read.status(), f)) << read.status().ToString();
  EXPECT_TRUE(Contains(read.status(), "1073741824")) << read.status().ToString();
  EXPECT_LT(largest, kMiB) << "ReadFile allocated for the oversized file";
  // The counter does see ReadFile's buffer when the file is allowed.
  const std::string small = dir_.File("two-mib");
  WriteBytes(small, std::string(2 * kMiB, 'x'));
  g_largest_allocation = 0;
  ASSERT_OK(env_->ReadFile(small, 4 * kMiB));
  EXPECT_GE(g_largest_allocation.load(), 2 * kMiB);
}

TEST_F(PosixEnvTest, MissingFileIsNotFoundAndNamesThePath) {
  const std::string f = dir_.File("missing");
  EXPECT_FALSE(env_->Exists(f));
  for (const Status& s : {env_->ReadFile(f, 10).status(), env_->FileSize(f).status(),
                          env_->RemoveFile(f), env_->ListDir(f).status(), env_->RemoveDir(f)}) {
    EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
    EXPECT_TRUE(Contains(s, f)) << s.ToString();
  }
}

TEST_F(PosixEnvTest, PathThroughARegularFileIsNotFound) {
  // ENOTDIR fails for root too.
  const std::string file = dir_.File("plain");
  WriteBytes(file, "x");
  const std::string inside = file + "/child";
  const Status create = env_->NewWritableFile(inside).status();
  EXPECT_EQ(create.code(), StatusCode::kNotFound) << create.ToString();
  EXPECT_TRUE(Contains(create, inside)) << create.ToString();
  EXPECT_EQ(env_->CreateDir(inside).code(), StatusCode::kNotFound);
  EXPECT_EQ(env_->ListDir(file).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(env_->SyncDir(inside).code(), StatusCode::kNotFound);
}

TEST_F(PosixEnvTest, RefusedCreationIsPermissionDenied) {
  // Root bypasses file modes, but not sysfs: creating a file at its top is
  // EPERM for root (EACCES for others).
  if (!std::filesystem::is_directory("/sys/kernel")) {
    GTEST_SKIP() << "no sysfs at /sys: cannot provoke EPERM/EACCES as root here";
  }
  const std::string f = "/sys/holdfast_env_test_must_not_exist";
  const Status s = env_->NewWritableFile(f).status();
  if (s.ok()) ::unlink(f.c_str());
  EXPECT_EQ(s.code(), StatusCode::kPermissionDenied) << s.ToString();
  EXPECT_TRUE(Contains(s, f)) << s.ToString();
}

TEST_F(PosixEnvTest, ListDirNamesEntriesWithoutDots) {
  EXPECT_TRUE(env_->ListDir(dir_.path()).value().empty());
  WriteBytes(dir_.File("b"), "");
  WriteBytes(dir_.File(".hidden"), "");
  std::filesystem::create_directory(dir_.File("sub"));
  std::vector<std::string> names = env_->ListDir(dir_.path()).value();
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".hidden", "b", "sub"}));
}

TEST_F(PosixEnvTest, CreateDirIsIdempotentAndNeedsItsParent) {
  const std::string d = dir_.File("d");
  ASSERT_OK(env_->CreateDir(d));
  EXPECT_TRUE(std::filesystem::is_directory(d));
  WriteBytes(d + "/keep", "k");
  ASSERT_OK(env_->CreateDir(d));
  EXPECT_EQ(ReadFileToString(d + "/keep"), "k");
  const Status s = env_->CreateDir(dir_.File("no/such/parent"));
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  ASSERT_OK(env_->SyncDir(d));
}

TEST_F(PosixEnvTest, CreateDirOverARegularFileFails) {
  const std::string f = dir_.File("f");
  WriteBytes(f, "x");
  EXPECT_FALSE(env_->CreateDir(f).ok());
}

TEST_F(PosixEnvTest, RenameReplacesTheTarget) {
  const std::string a = dir_.File("a"), b = dir_.File("b");
  WriteBytes(a, "A");
  WriteBytes(b, "B");
  ASSERT_OK(env_->Rename(a, b));
  EXPECT_FALSE(env_->Exists(a));
  EXPECT_EQ(ReadFileToString(b), "A");
  const Status s = env_->Rename(a, b);
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  EXPECT_TRUE(Contains(s, a) && Contains(s, b)) << s.ToString();
  EXPECT_EQ(ReadFileToString(b), "A");
}

TEST_F(PosixEnvTest, RenameMovesADirectory) {
  const std::string a = dir_.File("a"), b = dir_.File("b");
  std::filesystem::create_directory(a);
  WriteBytes(a + "/f", "f");
  ASSERT_OK(env_->Rename(a, b));
  EXPECT_EQ(ReadFileToString(b + "/f"), "f");
}

TEST_F(PosixEnvTest, RemoveFileAndRemoveDir) {
  const std::string d = dir_.File("d");
  std::filesystem::create_directory(d);
  WriteBytes(d + "/f", "f");
  EXPECT_FALSE(env_->RemoveDir(d).ok());  // not empty
  EXPECT_TRUE(std::filesystem::exists(d + "/f"));
  EXPECT_FALSE(env_->RemoveFile(d).ok());  // a directory
  ASSERT_OK(env_->RemoveFile(d + "/f"));
  EXPECT_FALSE(env_->Exists(d + "/f"));
  ASSERT_OK(env_->RemoveDir(d));
  EXPECT_FALSE(env_->Exists(d));
}

TEST_F(PosixEnvTest, RemoveTreeRemovesNestedDirectories) {
  const std::string root = dir_.File("root");
  std::filesystem::create_directories(root + "/a/b/c");
  std::filesystem::create_directories(root + "/empty");
  WriteBytes(root + "/top", "t");
  WriteBytes(root + "/a/x", "x");
  WriteBytes(root + "/a/b/c/deep", "d");
  WriteBytes(dir_.File("sibling"), "s");
  ASSERT_OK(RemoveTree(env_, root));
  EXPECT_FALSE(std::filesystem::exists(root));
  EXPECT_EQ(ReadFileToString(dir_.File("sibling")), "s");
  EXPECT_EQ(RemoveTree(env_, root).code(), StatusCode::kNotFound);
  const std::string empty = dir_.File("e");
  std::filesystem::create_directory(empty);
  ASSERT_OK(RemoveTree(env_, empty));
  EXPECT_FALSE(std::filesystem::exists(empty));
}

TEST_F(PosixEnvTest, RemoveTreeDoesNotFollowSymlinks) {
  const std::string outside = dir_.File("outside"), root = dir_.File("root");
  std::filesystem::create_directory(outside);
  WriteBytes(outside + "/precious", "p");
  std::filesystem::create_directory(root);
  std::filesystem::create_directory_symlink(outside, root + "/link");
  EXPECT_OK(RemoveTree(env_, root));
  EXPECT_TRUE(std::filesystem::exists(outside + "/precious")) << "deleted through the symlink";
  EXPECT_FALSE(std::filesystem::exists(root));
}

TEST(EnvPathTest, JoinPath) {
  EXPECT_EQ(JoinPath("a/b", "c"), "a/b/c");
  EXPECT_EQ(JoinPath("a/b/", "c"), "a/b/c");
  EXPECT_EQ(JoinPath("/", "c"), "/c");
  EXPECT_EQ(JoinPath("", "c"), "c");
  EXPECT_EQ(JoinPath("/tmp/x", "ckpt-7/MANIFEST.json"), "/tmp/x/ckpt-7/MANIFEST.json");
}

TEST(EnvPathTest, ParentDir) {
  EXPECT_EQ(ParentDir("a/b/c"), "a/b");
  EXPECT_EQ(ParentDir("a/b"), "a");
  EXPECT_EQ(ParentDir("c"), ".");
  EXPECT_EQ(ParentDir("/c"), "/");
  EXPECT_EQ(ParentDir("/"), "/");
  EXPECT_EQ(ParentDir("/tmp/x/LATEST"), "/tmp/x");
  EXPECT_EQ(ParentDir(JoinPath("d", "f")), "d");
}

// ---------------------------------------------------------------------------
// AtomicWriteFile.

class EnvAtomicWriteFileTest : public ::testing::Test {
 protected:
  // Sets up one trial: `x` holds "old" (or does not exist), no tmp file.
  void Reset(bool with_old) {
    std::filesystem::remove(tmp_);
    std::filesystem::remove(x_);
    if (with_old) WriteBytes(x_, "old");
  }
  // "old", "new", or "<missing>".
  std::string Content() const {
    return std::filesystem::exists(x_) ? ReadFileToString(x_) : "<missing>";
  }
  bool TmpExists() const { return std::filesystem::exists(tmp_); }

  TempDir dir_;
  const std::string x_ = dir_.File("x");
  const std::string tmp_ = x_ + ".tmp";
};

TEST_F(EnvAtomicWriteFileTest, WritesANewFileAndReplacesAnOldOne) {
  ASSERT_OK(AtomicWriteFile(Env::Default(), x_, Bytes("first")));
  EXPECT_EQ(Content(), "first");
  ASSERT_OK(AtomicWriteFile(Env::Default(), x_, Bytes("second, longer")));
  EXPECT_EQ(Content(), "second, longer");
  ASSERT_OK(AtomicWriteFile(Env::Default(), x_, Bytes("")));
  EXPECT_EQ(Content(), "");
  EXPECT_FALSE(TmpExists());
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir_.path()),
                          std::filesystem::directory_iterator()),
            1);  // x alone
}

TEST_F(EnvAtomicWriteFileTest, IsDurableOnceItReturnsOk) {
  Reset(true);
  FaultInjectionEnv env;
  ASSERT_OK(AtomicWriteFile(&env, x_, Bytes("new")));
  EXPECT_EQ(env.operations(), 6);  // create, append, sync, close, rename, sync dir
  ASSERT_OK(env.PowerCut());
  EXPECT_EQ(Content(), "new");
  EXPECT_FALSE(TmpExists());
}

TEST_F(EnvAtomicWriteFileTest, MissingDirectoryFailsCleanly) {
  const std::string path = dir_.File("no-such-dir/x");
  const Status s = AtomicWriteFile(Env::Default(), path, Bytes("new"));
  EXPECT_EQ(s.code(), StatusCode::kNotFound) << s.ToString();
  EXPECT_TRUE(Contains(s, path + ".tmp")) << s.ToString();
}

TEST_F(EnvAtomicWriteFileTest, NoSpaceAtTheAppendLeavesTheOldFile) {
  Reset(true);
  FaultInjectionEnv env;
  env.FailAt(1, ENOSPC);
  const Status s = AtomicWriteFile(&env, x_, Bytes("new"));
  EXPECT_EQ(env.last_fault(), "Append " + tmp_);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_TRUE(Contains(s, tmp_)) << s.ToString();
  EXPECT_EQ(Content(), "old");
  EXPECT_FALSE(TmpExists());
}

TEST_F(EnvAtomicWriteFileTest, FullDiskFromTheAppendOnLeavesTheOldFile) {
  Reset(true);
  FaultInjectionEnv env;
  env.FailFrom(1, ENOSPC, FaultInjectionEnv::kDiskFullOps);
  const Status s = AtomicWriteFile(&env, x_, Bytes("new"));
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted) << s.ToString();
  EXPECT_EQ(Content(), "old");
  EXPECT_FALSE(TmpExists());  // removing needs no space
  ASSERT_OK(env.PowerCut());
  EXPECT_EQ(Content(), "old");
}

// A failure (an error returned, the process lives on) at every operation.
TEST_F(EnvAtomicWriteFileTest, FailureAtEveryOperationLeavesOldOrNew) {
  for (const bool with_old : {true, false}) {
    const std::string before = with_old ? "old" : "<missing>";
    for (const int err : {EIO, ENOSPC, EACCES}) {
      int64_t i = 0;
      for (;; ++i) {
        SCOPED_TRACE(::testing::Message()
                     << "old=" << with_old << " errno=" << err << " failing op " << i);
        Reset(with_old);
        FaultInjectionEnv env;
        env.FailAt(i, err);
        const Status s = AtomicWriteFile(&env, x_, Bytes("new"));
        if (env.faults_injected() == 0) {  // i is past the last operation
          ASSERT_OK(s);
          EXPECT_EQ(Content(), "new");
          break;
        }
        SCOPED_TRACE("failed: " + env.last_fault());
        EXPECT_FALSE(s.ok());
        EXPECT_EQ(s.code(), ErrnoToStatus(err, "").code()) << s.ToString();
        const std::string after = Content();
        EXPECT_TRUE(after == before || after == "new") << after;
        EXPECT_FALSE(TmpExists()) << "tmp file left behind after a failure";
        // Whatever the failure left must also be what survives a power cut
        // now, or the old content.
        ASSERT_OK(env.PowerCut());
        const std::string durable = Content();
        EXPECT_TRUE(durable == before || durable == after) << durable;
        EXPECT_FALSE(TmpExists());
      }
      EXPECT_EQ(i, 6) << "AtomicWriteFile made an unexpected number of Env calls";
    }
  }
}

// A crash (the process dies at an operation; nothing after it happens), with
// and without a power cut afterwards, at every operation. Without a power cut
// a crash between creating x.tmp and renaming it leaves x.tmp behind: that is
// allowed (nothing reads it; the next AtomicWriteFile truncates it), and the
// next write must succeed over it.
TEST_F(EnvAtomicWriteFileTest, CrashAtEveryOperationLeavesOldOrNew) {
  for (const bool power_cut : {false, true}) {
    for (const bool with_old : {true, false}) {
      const std::string before = with_old ? "old" : "<missing>";
      int64_t i = 0;
      int tmp_left = 0;
      for (;; ++i) {
        SCOPED_TRACE(::testing::Message()
                     << "power_cut=" << power_cut << " old=" << with_old << " crash at op " << i);
        Reset(with_old);
        FaultInjectionEnv env;
        env.CrashAt(i);
        const Status s = AtomicWriteFile(&env, x_, Bytes("new"));
        const bool crashed = env.crashed();
        if (crashed) {
          EXPECT_EQ(s.code(), StatusCode::kAborted) << s.ToString();
        } else {
          ASSERT_OK(s);
        }
        if (power_cut) ASSERT_OK(env.PowerCut());
        const std::string after = Content();
        if (crashed) {
          EXPECT_TRUE(after == before || after == "new") << env.last_fault() << ": " << after;
        } else {
          EXPECT_EQ(after, "new");
        }
        tmp_left += TmpExists() ? 1 : 0;
        // Recovery: a fresh Env over the same directory writes again.
        ASSERT_OK(AtomicWriteFile(Env::Default(), x_, Bytes("newer")));
        EXPECT_EQ(Content(), "newer");
        EXPECT_FALSE(TmpExists());
        if (!crashed) break;
      }
      EXPECT_EQ(i, 6);
      // Crashes at Append, Sync, Close and Rename leave x.tmp (it exists from
      // NewWritableFile until the rename). After a power cut, the strict
      // model undoes x.tmp's creation, whose directory entry was never synced.
      EXPECT_EQ(tmp_left, power_cut ? 0 : 4);
    }
  }
}

// The durable outcome flips from old to new exactly at the final SyncDir:
// a crash before it and a power cut give the old content.
TEST_F(EnvAtomicWriteFileTest, NewContentIsDurableOnlyAfterTheDirectorySync) {
  for (int64_t i = 0; i <= 6; ++i) {
    SCOPED_TRACE(::testing::Message() << "crash at op " << i);
    Reset(true);
    FaultInjectionEnv env;
    env.CrashAt(i);
    (void)AtomicWriteFile(&env, x_, Bytes("new"));
    ASSERT_OK(env.PowerCut());
    EXPECT_EQ(Content(), i < 6 ? "old" : "new");
  }
}

}  // namespace
}  // namespace holdfast
